/*
 * test_deploy.c — the operator's kit in deploy/ stays true to parleyd.
 *
 *   1. deploy/parleyd.conf parses: `parleyd --config deploy/parleyd.conf
 *      --check-config` exits 0 (its file paths are overridden by flags with
 *      this test's TLS material and JWT key, as flags beat the file), and
 *      its settings take effect (listen, port, jwt_alg, ...).
 *   2. It documents every key `--check-config` prints (set or as a
 *      commented-out default), and each commented-out default is the real
 *      default: a new key or a changed default fails here until the example
 *      says so.
 *   3. deploy/parleyd.service passes `systemd-analyze verify` without a
 *      single warning (with ExecStart pointed at the built parleyd) where
 *      systemd-analyze exists; otherwise that part says it was skipped.
 */
#include "itest.h"

static char *slurp_cmd(const char *cmd, int *status)
{
	FILE *f = popen(cmd, "r");
	IT_CHECK(f, "popen %s", cmd);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	IT_CHECK(buf);
	size_t r;
	while ((r = fread(buf + n, 1, cap - 1 - n, f)) > 0) {
		n += r;
		if (n == cap - 1) {
			cap *= 2;
			buf = realloc(buf, cap);
			IT_CHECK(buf);
		}
	}
	buf[n] = 0;
	int st = pclose(f);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return buf;
}

static char *slurp_file(const char *path)
{
	FILE *f = fopen(path, "r");
	IT_CHECK(f, "cannot open %s", path);
	char *buf = malloc(1 << 20);
	IT_CHECK(buf);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

/* The line of text that starts with prefix (at a line start), or NULL. */
static const char *line_with(const char *text, const char *prefix)
{
	size_t pl = strlen(prefix);
	for (const char *p = text; p && *p;) {
		if (!strncmp(p, prefix, pl))
			return p;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

static int same_line(const char *a, const char *b)
{
	size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
	return la == lb && !memcmp(a, b, la);
}

int main(void)
{
	it_init("deploy");
	const char *src = getenv("PARLEY_SRC_DIR");
	const char *bin = getenv("PARLEY_BIN_DIR");
	if (!src) {
		fprintf(stderr, "deploy: PARLEY_SRC_DIR is not set\n");
		return 77;
	}
	char conf[600], unit[600], cmd[4096];
	snprintf(conf, sizeof conf, "%s/deploy/parleyd.conf", src);
	snprintf(unit, sizeof unit, "%s/deploy/parleyd.service", src);

	/* an ES256 public key for the example's jwt_alg */
	snprintf(cmd, sizeof cmd,
		 "cd '%s' && openssl ecparam -name prime256v1 -genkey -noout -out es.key "
		 ">/dev/null 2>&1 && openssl ec -in es.key -pubout -out es.pub >/dev/null 2>&1",
		 it_dir);
	IT_CHECK(system(cmd) == 0, "openssl ec");

	/* 1. the example parses and takes effect */
	snprintf(cmd, sizeof cmd,
		 "env -u PARLEY_CONFIG '%s/server/parleyd' --config '%s' --check-config "
		 "--data '%s' --tls-cert '%s' --tls-key '%s' --jwt-public-key-file '%s' 2>&1",
		 bin, conf, it_path("data"), it_path("server.pem"), it_path("server.key"),
		 it_path("es.pub"));
	int st;
	char *out = slurp_cmd(cmd, &st);
	IT_CHECK(st == 0 && strstr(out, "config: ok"), "check-config of the example: %d\n%s", st,
		 out);
	IT_CHECK(line_with(out, "listen = \"0.0.0.0\""), "%s", out);
	IT_CHECK(line_with(out, "port = 0\n"), "%s", out);
	IT_CHECK(line_with(out, "jwt_alg = \"ES256\""), "%s", out);
	IT_CHECK(line_with(out, "jwt_audience = \"parley\""), "%s", out);

	/* 2. every key is documented; commented defaults are the defaults */
	char *ex = slurp_file(conf);
	int missing = 0, wrong = 0;
	for (const char *p = out; *p;) {
		const char *eq = strstr(p, " = ");
		const char *nl = strchr(p, '\n');
		if (eq && (!nl || eq < nl)) {
			char key[64], set[80], commented[80];
			snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
			snprintf(set, sizeof set, "%s = ", key);
			snprintf(commented, sizeof commented, "# %s = ", key);
			const char *c = line_with(ex, commented);
			if (!line_with(ex, set) && !c) {
				fprintf(stderr, "deploy/parleyd.conf does not mention key '%s'\n", key);
				missing++;
			} else if (c && !same_line(c + 2, p)) {
				fprintf(stderr, "deploy/parleyd.conf: '%.*s' but the default is '%.*s'\n",
					(int)strcspn(c, "\n"), c, (int)strcspn(p, "\n"), p);
				wrong++;
			}
		}
		p = nl ? nl + 1 : p + strlen(p);
	}
	IT_CHECK(!missing && !wrong,
		 "deploy/parleyd.conf is out of date with parleyd --check-config "
		 "(%d keys missing, %d wrong defaults): update it", missing, wrong);
	free(ex);
	free(out);

	/* 3. the systemd unit */
	if (system("command -v systemd-analyze >/dev/null 2>&1") != 0) {
		printf("deploy: systemd-analyze not found: unit check skipped\n");
	} else {
		snprintf(cmd, sizeof cmd,
			 "sed 's|^ExecStart=/usr/local/bin/parleyd|ExecStart=%s/server/parleyd|' "
			 "'%s' > '%s/parleyd.service' && systemd-analyze verify '%s/parleyd.service' 2>&1",
			 bin, unit, it_dir, it_dir);
		out = slurp_cmd(cmd, &st);
		/* verify exits 0 on a value it ignores, so any output is a failure */
		IT_CHECK(st == 0 && !out[0], "systemd-analyze verify deploy/parleyd.service: %d\n%s",
			 st, out);
		free(out);
		printf("deploy: systemd-analyze verify ok\n");
	}
	printf("deploy: ok\n");
	return 0;
}
