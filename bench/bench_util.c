/*
 * bench_util.c — clocks, temp directories, ports, payloads, child processes
 * and the watchdog for parley-bench.
 *
 * The watchdog is what keeps every run bounded: each mode arms it with its
 * own time budget (measure + setup + drain); if it fires, it SIGKILLs the
 * registered child servers (redis-server, parleyd) and exits with status 2
 * so no benchmark ever hangs a shared machine or leaves a server behind.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* also set by the build (-D_GNU_SOURCE) */
#endif
#include "bench.h"
#include "bench_json.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "parley_common.h"

double bench_now_s(void)
{
	return (double)parley_mono_ns() / 1e9;
}

void bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

void bench_sleep_until_ns(uint64_t deadline_ns)
{
	struct timespec ts = {(time_t)(deadline_ns / 1000000000u),
			      (long)(deadline_ns % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

#define BENCH_TMP_MARK "parley-bench-"

char *bench_mkdtemp(const char *dir, const char *prefix)
{
	size_t n = strlen(dir) + strlen(prefix) + sizeof(BENCH_TMP_MARK) + 16;
	char *p = malloc(n);
	if (!p)
		return NULL;
	snprintf(p, n, "%s/" BENCH_TMP_MARK "%s-XXXXXX", dir, prefix);
	if (!mkdtemp(p)) {
		free(p);
		return NULL;
	}
	return p;
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		return -errno;
	return 0;
}

void bench_tmp_remove(char **tmp)
{
	if (!*tmp)
		return;
	bench_rmtree(*tmp);
	free(*tmp);
	*tmp = NULL;
}

int bench_rmtree(const char *path)
{
	/* Only ever delete what we created ourselves. */
	if (!path || !strstr(path, "/" BENCH_TMP_MARK))
		return -EINVAL;
	if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
		return errno ? -errno : -EIO;
	return 0;
}

int bench_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	close(fd);
	return ntohs(a.sin_port);
}

void bench_fill_payload(uint8_t *buf, size_t len, uint64_t seed)
{
	static const char words[][8] = {"hey ", "ok ", "see ", "you ", "at ",
					 "the ", "lunch ", "lol ", "yes ", "no ",
					 "maybe ", "now ", "later ", "cool ",
					 "thanks ", "soon "};
	struct parley_rng rng = {seed};
	size_t off = 0;
	while (off < len) {
		const char *w = words[parley_rng_below(&rng, PARLEY_ARRAY_LEN(words))];
		size_t wl = strlen(w);
		for (size_t i = 0; i < wl && off < len; i++)
			buf[off++] = (uint8_t)w[i];
	}
}

/* ---- children and watchdog --------------------------------------------------- */

#define BENCH_MAX_CHILDREN 16
static volatile pid_t children[BENCH_MAX_CHILDREN];

void bench_child_register(pid_t pid)
{
	for (unsigned i = 0; i < BENCH_MAX_CHILDREN; i++)
		if (children[i] == 0) {
			children[i] = pid;
			return;
		}
}

pid_t bench_spawn(char *const argv[], const char *log)
{
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* die with the parent even if it is SIGKILLed */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (log) {
			int lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			if (lfd >= 0) {
				dup2(lfd, 1);
				dup2(lfd, 2);
			}
		} else {
			int devnull = open("/dev/null", O_RDWR);
			if (devnull >= 0) {
				dup2(devnull, 0);
				dup2(devnull, 1);
			}
		}
		execv(argv[0], argv);
		fprintf(stderr, "parley-bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	bench_child_register(pid);
	return pid;
}

void bench_child_forget(pid_t pid)
{
	for (unsigned i = 0; i < BENCH_MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

void bench_child_kill(pid_t *pid)
{
	if (*pid <= 0)
		return;
	kill(*pid, SIGKILL);
	waitpid(*pid, NULL, 0);
	bench_child_forget(*pid);
	*pid = -1;
}

bool bench_child_exited(pid_t *pid)
{
	int st;
	if (*pid <= 0 || waitpid(*pid, &st, WNOHANG) != *pid)
		return false;
	bench_child_forget(*pid);
	*pid = -1;
	return true;
}

void bench_children_kill(void)
{
	/* async-signal-safe: kill + waitpid only, each child by its own pid */
	for (unsigned i = 0; i < BENCH_MAX_CHILDREN; i++) {
		pid_t p = children[i];
		if (p > 0) {
			kill(p, SIGKILL);
			waitpid(p, NULL, 0);
			children[i] = 0;
		}
	}
}

static void watchdog_fire(int sig)
{
	(void)sig;
	static const char msg[] =
		"level=error comp=bench msg=\"watchdog: run exceeded its time "
		"budget, killing child servers and exiting\"\n";
	(void)!write(2, msg, sizeof msg - 1);
	bench_children_kill();
	_exit(2);
}

void bench_watchdog_arm(double seconds)
{
	struct itimerval it = {0};
	if (seconds > 0) {
		signal(SIGALRM, watchdog_fire);
		it.it_value.tv_sec = (time_t)seconds;
		it.it_value.tv_usec = (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6);
		if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
			it.it_value.tv_usec = 1;
	}
	setitimer(ITIMER_REAL, &it, NULL);
}

/* ---- chat-like text bodies ------------------------------------------------------ */

#define BENCH_TEXT_MAX (4u << 20)
static char *text_buf;
static size_t text_len;

int bench_text_load(const char *dir)
{
	if (text_buf)
		return 0;
	static const char *const files[] = {"fortunes", "literature", "riddles", "people",
					    "computers", "cookie", "love", "work", "wisdom"};
	char *buf = malloc(BENCH_TEXT_MAX);
	if (!buf)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < PARLEY_ARRAY_LEN(files) && n < BENCH_TEXT_MAX; i++) {
		char p[1024];
		snprintf(p, sizeof p, "%s/%s", dir ? dir : "/usr/share/games/fortunes", files[i]);
		FILE *f = fopen(p, "rb");
		if (!f)
			continue;
		int c, prev = ' ';
		while (n < BENCH_TEXT_MAX && (c = fgetc(f)) != EOF) {
			if (c == '\n' || c == '\t' || c == '%')
				c = ' ';
			if (c == ' ' && prev == ' ')
				continue;
			buf[n++] = (char)c;
			prev = c;
		}
		fclose(f);
	}
	if (n < 4096) {
		free(buf);
		return -PARLEY_ENOTFOUND;
	}
	text_buf = buf;
	text_len = n;
	return 0;
}

void bench_text_body(uint8_t *buf, size_t len, uint64_t seed)
{
	if (!text_buf || len > text_len) {
		bench_fill_payload(buf, len, seed);
		return;
	}
	struct parley_rng rng = {seed};
	size_t off = parley_rng_below(&rng, text_len - len + 1);
	memcpy(buf, text_buf + off, len);
}

void bench_load_begin(struct load_result *out, const char *system,
		      uint32_t producers, uint32_t payload, double rate)
{
	memset(out, 0, sizeof *out);
	out->system = system;
	out->producers = producers;
	out->payload = payload;
	out->open_loop = rate > 0;
	out->target_rate = rate;
	bench_hist_init(&out->lat);
	bench_hist_init(&out->lag);
}

int bench_poll(struct pollfd *pf, unsigned n, uint64_t next_ns)
{
	struct timespec ts = {0, (long)BENCH_POLL_MAX_NS};
	if (next_ns) {
		uint64_t now = parley_mono_ns();
		uint64_t wait = next_ns > now ? next_ns - now : 0;
		if (wait < BENCH_POLL_MAX_NS)
			ts.tv_nsec = (long)wait;
	}
	int pr = ppoll(pf, (nfds_t)n, &ts, NULL);
	if (pr < 0)
		return errno == EINTR ? 0 : -errno;
	return pr;
}

uint64_t bench_in_window(const uint64_t *intended, uint64_t k, uint64_t win_start,
			 uint64_t win_end)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < k; i++)
		if (intended[i] >= win_start && intended[i] < win_end)
			n++;
	return n;
}

void bench_deliv_json_begin(struct bench_json *js, const char *system, const char *version,
			    double rate, uint32_t payload, uint64_t in_window,
			    const struct bench_hist *h, uint64_t not_delivered)
{
	bj_obj(js, NULL);
	bj_str(js, "kind", "delivery");
	bj_str(js, "system", system);
	if (version)
		bj_str(js, "version", version);
	bj_num(js, "rate", rate);
	bj_u64(js, "payload", payload);
	bj_u64(js, "sent_in_window", in_window);
	bj_u64(js, "delivered_in_window", h->count);
	bj_u64(js, "not_delivered", not_delivered);
	bj_hist(js, "deliver_latency", h);
}

void bench_deliv_stat(struct deliv_stat *st, bool ok, const struct bench_hist *h)
{
	st->ok = ok;
	st->p50_us = (double)bench_hist_quantile(h, 0.5) / 1e3;
	st->p99_us = (double)bench_hist_quantile(h, 0.99) / 1e3;
	st->p999_us = (double)bench_hist_quantile(h, 0.999) / 1e3;
}

long bench_http_req(const char *method, int port, const char *path, char *buf,
		    size_t cap, int timeout_ms)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	char req[256];
	int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
			 "Content-Length: 0\r\nConnection: close\r\n\r\n", method, path);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return -PARLEY_EIO;
	}
	size_t len = 0;
	for (;;) {
		if (len + 1 >= cap)
			break;
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	return (long)len;
}
