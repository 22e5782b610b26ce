/*
 * test_admin_config.c — the operator's side of parleyd.
 *
 *   - configuration precedence: flag > PARLEY_* env > config file >
 *     default, observed through `parleyd --check-config` (which prints the
 *     effective configuration); invalid configurations exit 2;
 *   - admin HTTP: /livez and /readyz answer 200, an unknown path 404,
 *     /metrics is Prometheus text whose counters move with traffic
 *     (connections, frames, acked appends, ack latency histogram, fsyncs,
 *     errors);
 *   - RS256 and ES256 tokens (minted by `parleyctl token` with throwaway
 *     keys) are accepted by a server configured for that algorithm, and an
 *     HS256 token is refused by it (no algorithm confusion);
 *   - the admin address is its own key (admin_listen, same precedence),
 *     127.0.0.1 by default whatever listen says: a server started with
 *     --listen 0.0.0.0 has its client port on 0.0.0.0 and its admin port
 *     on 127.0.0.1 (read from /proc/net/tcp); --dev on a non-loopback
 *     listen address refuses to start (exit 2, a message naming
 *     --dev-allow-public) unless --dev-allow-public is given.
 */
#include "itest.h"

static char *run_cmd(const char *cmd, int *status)
{
	FILE *p = popen(cmd, "r");
	IT_CHECK(p);
	size_t cap = 1 << 16, n = 0;
	char *out = malloc(cap);
	IT_CHECK(out);
	size_t k;
	while ((k = fread(out + n, 1, cap - 1 - n, p)) > 0)
		n += k;
	out[n] = '\0';
	int st = pclose(p);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return out;
}


/* The local IPv4 address (host order) of the TCP socket listening on port,
 * from /proc/net/tcp; 0xFFFFFFFF when there is none. */
static uint32_t listen_addr4(uint16_t port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	IT_CHECK(f);
	char line[512];
	uint32_t found = 0xFFFFFFFFu;
	while (fgets(line, sizeof line, f)) {
		unsigned addr, lport, st;
		if (sscanf(line, " %*d: %8X:%4X %*X:%*X %X", &addr, &lport, &st) == 3 &&
		    lport == port && st == 0x0A /* LISTEN */)
			found = ntohl(addr); /* the kernel prints it in network order */
	}
	fclose(f);
	return found;
}

static void admin_address(const char *bin)
{
	char cmd[4096];
	int st;
	char *out;
	/* the default does not follow listen */
	snprintf(cmd, sizeof cmd, "%s/server/parleyd --jwt-secret-file %s "
		 "--listen 0.0.0.0 --check-config", bin, it_path("jwt.secret"));
	out = run_cmd(cmd, &st);
	IT_CHECK(st == 0, "%s", out);
	IT_CHECK(strstr(out, "listen = \"0.0.0.0\"\n"), "%s", out);
	IT_CHECK(strstr(out, "admin_listen = \"127.0.0.1\"\n"), "%s", out);
	free(out);
	/* precedence: flag > env > file > default */
	FILE *f = fopen(it_path("admin.conf"), "w");
	IT_CHECK(f);
	fprintf(f, "admin_listen = 127.0.0.3\nadmin_max_connections = 9\n");
	fclose(f);
	snprintf(cmd, sizeof cmd, "%s/server/parleyd --dev --config %s --check-config",
		 bin, it_path("admin.conf"));
	out = run_cmd(cmd, &st);
	IT_CHECK(st == 0 && strstr(out, "admin_listen = \"127.0.0.3\"\n") &&
		 strstr(out, "admin_max_connections = 9\n") &&
		 strstr(out, "admin_request_timeout_ms = 5000\n"), "%s", out);
	free(out);
	snprintf(cmd, sizeof cmd, "PARLEY_ADMIN_LISTEN=127.0.0.2 %s/server/parleyd "
		 "--dev --config %s --check-config", bin, it_path("admin.conf"));
	out = run_cmd(cmd, &st);
	IT_CHECK(st == 0 && strstr(out, "admin_listen = \"127.0.0.2\"\n"), "%s", out);
	free(out);
	snprintf(cmd, sizeof cmd, "PARLEY_ADMIN_LISTEN=127.0.0.2 %s/server/parleyd "
		 "--dev --config %s --admin-listen ::1 --check-config", bin,
		 it_path("admin.conf"));
	out = run_cmd(cmd, &st);
	IT_CHECK(st == 0 && strstr(out, "admin_listen = \"::1\"\n"), "%s", out);
	free(out);
	const char *bad[] = {"--dev --admin-max-connections 0",
			     "--dev --admin-request-timeout-ms 10"};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(bad); i++) {
		snprintf(cmd, sizeof cmd, "%s/server/parleyd %s --check-config 2>&1",
			 bin, bad[i]);
		out = run_cmd(cmd, &st);
		IT_CHECK(st == 2, "\"%s\" exited %d: %s", bad[i], st, out);
		free(out);
	}

	/* --dev with development secrets on a public address: refused */
	const char *pub[] = {"--listen 0.0.0.0", "--listen 0.0.0.0:7999", "--listen ::"};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(pub); i++) {
		snprintf(cmd, sizeof cmd, "%s/server/parleyd --dev %s --data %s "
			 "--port 0 --tls-port %u --admin-port 0 2>&1", bin, pub[i],
			 it_path("dev-data"), it_free_port());
		out = run_cmd(cmd, &st);
		IT_CHECK(st == 2 && strstr(out, "--dev-allow-public"),
			 "--dev %s: exit %d: %s", pub[i], st, out);
		free(out);
		snprintf(cmd, sizeof cmd, "%s/server/parleyd --dev %s "
			 "--dev-allow-public --check-config 2>&1", bin, pub[i]);
		out = run_cmd(cmd, &st);
		IT_CHECK(st == 0, "--dev %s --dev-allow-public: %s", pub[i], out);
		free(out);
	}
	/* loopback names and addresses are fine */
	const char *lo[] = {"127.0.0.1", "localhost", "::1", "127.0.0.5"};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(lo); i++) {
		snprintf(cmd, sizeof cmd, "%s/server/parleyd --dev --listen %s "
			 "--check-config 2>&1", bin, lo[i]);
		out = run_cmd(cmd, &st);
		IT_CHECK(st == 0, "--dev --listen %s: %s", lo[i], out);
		free(out);
	}

	/* a real server on 0.0.0.0: clients on every address, admin local */
	struct it_server srv;
	it_server_init(&srv, "wild");
	srv.extra[0] = "--listen";
	srv.extra[1] = "0.0.0.0";
	it_server_start(&srv);
	int code;
	out = it_http_get(srv.admin_port, "/livez", &code);
	IT_CHECK(code == 200);
	free(out);
	IT_CHECK(listen_addr4(srv.port) == 0, "client port not on 0.0.0.0");
	uint32_t a = listen_addr4(srv.admin_port);
	IT_CHECK(a == 0x7F000001u, "admin port listens on %08x, want 127.0.0.1", a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);
}

int main(void)
{
	it_init("admin_config");
	const char *bin = getenv("PARLEY_BIN_DIR");
	char cmd[4096];
	int st;

	/* ---- precedence ---- */
	FILE *f = fopen(it_path("parleyd.conf"), "w");
	IT_CHECK(f);
	fprintf(f, "# test config\nmax_body = 1000\nevent_window = 7\n"
		   "idle_timeout_ms = 1111\nserver_id = \"from-file\"\n");
	fclose(f);
	snprintf(cmd, sizeof cmd,
		 "PARLEY_EVENT_WINDOW=8 PARLEY_IDLE_TIMEOUT_MS=2222 %s/server/parleyd "
		 "--dev --config %s --idle-timeout-ms 3333 --check-config",
		 bin, it_path("parleyd.conf"));
	char *out = run_cmd(cmd, &st);
	IT_CHECK(st == 0, "check-config failed: %s", out);
	IT_CHECK(strstr(out, "max_body = 1000\n"), "file value lost: %s", out);
	IT_CHECK(strstr(out, "event_window = 8\n"), "env must beat file: %s", out);
	IT_CHECK(strstr(out, "idle_timeout_ms = 3333\n"), "flag must beat env");
	IT_CHECK(strstr(out, "server_id = \"from-file\"\n"));
	IT_CHECK(strstr(out, "max_inflight = 64\n"), "default lost");
	IT_CHECK(strstr(out, "config: ok"));
	free(out);
	/* invalid: unknown key, bad number, no JWT key, bad TLS files */
	const char *bad[] = {
		"--dev --no-such-key 1",
		"--dev --max-frame 12",
		"--dev --port banana",
		"--jwt-secret-file /nonexistent/secret",
		"--dev --tls-cert /nonexistent.pem --tls-key /nonexistent.key",
		"--dev --jwt-alg HS512",
	};
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(bad); i++) {
		snprintf(cmd, sizeof cmd, "%s/server/parleyd %s --check-config 2>&1",
			 bin, bad[i]);
		out = run_cmd(cmd, &st);
		IT_CHECK(st == 2, "\"%s\" exited %d: %s", bad[i], st, out);
		free(out);
	}

	/* ---- admin HTTP and metrics ---- */
	struct it_server srv;
	it_server_init(&srv, "s1");
	it_server_start(&srv);
	int code;
	out = it_http_get(srv.admin_port, "/livez", &code);
	IT_CHECK(code == 200);
	free(out);
	/* ready once every loop serves (the TCP port may accept a moment
	 * earlier: the listen backlog exists before the loops run) */
	for (int i = 0; i < 200; i++) {
		out = it_http_get(srv.admin_port, "/readyz", &code);
		free(out);
		if (code == 200)
			break;
		IT_CHECK(code == 503, "readyz code %d", code);
		it_sleep_ms(50);
	}
	IT_CHECK(code == 200, "never ready");
	out = it_http_get(srv.admin_port, "/nope", &code);
	IT_CHECK(code == 404);
	free(out);
	char *m0 = it_http_get(srv.admin_port, "/metrics", &code);
	IT_CHECK(code == 200 && strstr(m0, "text/plain; version=0.0.4"));
	IT_CHECK(strstr(m0, "# TYPE parley_ack_latency_seconds histogram"));

	struct parley_client *a = it_client(&srv, "alice", "a", 1, NULL);
	IT_OK(parley_client_conv_open(a, "bob", NULL)); /* SEND needs it */
	for (int i = 0; i < 10; i++)
		IT_OK(parley_client_send(a, "d:alice:bob", 1, "m", 1, NULL));
	const struct parley_history_page *pg;
	IT_CHECK(parley_client_history(a, "d:carol:dave", 0, 5, &pg) == -PARLEY_EPERM);
	char *m1 = it_http_get(srv.admin_port, "/metrics", &code);
	IT_CHECK(code == 200);
	IT_CHECK(it_metric(m1, "parley_connections_open") >= 1);
	IT_CHECK(it_metric(m1, "parley_connections_tls_total") >=
		 it_metric(m0, "parley_connections_tls_total") + 1);
	IT_CHECK(it_metric(m1, "parley_appends_acked_total") ==
		 it_metric(m0, "parley_appends_acked_total") + 10);
	IT_CHECK(it_metric(m1, "parley_ack_latency_seconds_count") ==
		 it_metric(m0, "parley_ack_latency_seconds_count") + 10);
	IT_CHECK(strstr(m1, "parley_ack_latency_seconds_bucket{le=\"+Inf\"} "));
	IT_CHECK(it_metric(m1, "parley_fsyncs_total") > it_metric(m0, "parley_fsyncs_total"));
	/* The engine's per-stage histograms move with the same traffic: every
	 * acked SEND passed queue, fill, apply and callback; each WAL batch
	 * is one sync sample. */
	IT_CHECK(it_metric(m1, "parley_engine_stage_seconds_count{stage=\"queue\"}") >=
		 it_metric(m0, "parley_engine_stage_seconds_count{stage=\"queue\"}") + 10);
	IT_CHECK(it_metric(m1, "parley_engine_stage_seconds_count{stage=\"callback\"}") >=
		 it_metric(m0, "parley_engine_stage_seconds_count{stage=\"callback\"}") + 10);
	IT_CHECK(it_metric(m1, "parley_engine_stage_seconds_count{stage=\"sync\"}") >
		 it_metric(m0, "parley_engine_stage_seconds_count{stage=\"sync\"}"));
	IT_CHECK(it_metric(m1, "parley_engine_stage_seconds_bucket{stage=\"sync\",le=\"+Inf\"}") ==
		 it_metric(m1, "parley_engine_stage_seconds_count{stage=\"sync\"}"));
	IT_CHECK(it_metric(m1, "parley_frames_received_total") >=
		 it_metric(m0, "parley_frames_received_total") + 13);
	IT_CHECK(it_metric(m1, "parley_errors_sent_total") >=
		 it_metric(m0, "parley_errors_sent_total") + 1);
	free(m0);
	free(m1);
	parley_client_free(a);
	IT_CHECK(it_server_stop(&srv, SIGTERM, 20000) == 0);

	/* ---- RS256 and ES256 ---- */
	snprintf(cmd, sizeof cmd,
		 "cd '%s' && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
		 "-out es.key 2>/dev/null && openssl pkey -in es.key -pubout -out es.pub "
		 "&& openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rs.key "
		 "2>/dev/null && openssl pkey -in rs.key -pubout -out rs.pub", it_dir);
	IT_CHECK(system(cmd) == 0);
	const char *algs[2] = {"ES256", "RS256"};
	for (int k = 0; k < 2; k++) {
		const char *lc = k == 0 ? "es" : "rs";
		char pub[400], priv[400];
		snprintf(pub, sizeof pub, "%s/%s.pub", it_dir, lc);
		snprintf(priv, sizeof priv, "%s/%s.key", it_dir, lc);
		struct it_server s2;
		it_server_init(&s2, lc);
		s2.extra[0] = "--jwt-alg";
		s2.extra[1] = algs[k];
		s2.extra[2] = "--jwt-public-key-file";
		s2.extra[3] = pub;
		it_server_start(&s2);
		snprintf(cmd, sizeof cmd, "%s/tools/parleyctl token --alg %s --key %s "
			 "--sub zoe --iss parley-it --aud parley", bin, algs[k], priv);
		char *tok = run_cmd(cmd, &st);
		IT_CHECK(st == 0, "parleyctl token %s failed", algs[k]);
		tok[strcspn(tok, "\n")] = '\0';
		int err = 0;
		struct parley_client *c = it_client_tok(&s2, tok, "z", k, NULL, &err);
		IT_CHECK(c && err == 0, "%s token refused: %s", algs[k],
			 parley_strerror(err));
		IT_CHECK(!strcmp(parley_client_user_id(c), "zoe"));
		parley_client_free(c);
		free(tok);
		/* expired and wrong-audience tokens of the right algorithm */
		snprintf(cmd, sizeof cmd, "%s/tools/parleyctl token --alg %s --key %s "
			 "--sub zoe --iss parley-it --aud other", bin, algs[k], priv);
		tok = run_cmd(cmd, &st);
		tok[strcspn(tok, "\n")] = '\0';
		c = it_client_tok(&s2, tok, "z", 0, NULL, &err);
		IT_CHECK(!c && err == -PARLEY_EAUTH, "%s wrong aud accepted", algs[k]);
		free(tok);
		/* an HS256 token (even with the right claims) is refused */
		char *hs = it_token_for("zoe");
		c = it_client_tok(&s2, hs, "z", 0, NULL, &err);
		IT_CHECK(!c && err == -PARLEY_EAUTH, "HS256 accepted by %s server",
			 algs[k]);
		free(hs);
		IT_CHECK(it_server_stop(&s2, SIGTERM, 20000) == 0);
	}
	admin_address(bin);
	printf("admin_config: ok\n");
	return 0;
}
