/*
 * test_mgr_status — the manager's status page and messip-stat, against a
 * real manager on free loopback ports: the numbers on /, /metrics and
 * /status.json after registrations, channels and buffered messages;
 * Prometheus syntax; restarts counted after a worker or the status
 * process is killed; bad requests (wrong method, unknown path, garbage,
 * oversized, slowloris, more connections than slots) answered or closed
 * within their bounds while the manager keeps serving; a corrupted
 * segment; messip-stat's tables, defaults, and its refusal of broken or
 * hostile documents.
 *
 * Every manager is started with status_listen on a free port (a later
 * line of the config file overrides mp_mgrproc's "status_listen off").
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mgr_config.h"
#include "mgr_state.h"
#include "mp_mgrproc.h"
#include "mp_shm.h"
#include "mp_test.h"
#include "mp_time.h"
#include "test_mgr_cli.h"

#define RESP_MAX (1u << 20)
#define OUT_MAX	 (256u * 1024)
#define MAX_KIDS 16
#define NONE	 LLONG_MIN

static struct mp_mgrproc mgr;
static int sport;	    /* the status page's port */
static char resp[RESP_MAX]; /* last HTTP answer, NUL-terminated */
static char out[OUT_MAX], err[OUT_MAX];

static int64_t ms_since(int64_t t0)
{
	return (mp_time_now_ns() - t0) / 1000000;
}

/* ---- HTTP over a plain socket -------------------------------------------- */

/* Read from fd until EOF or deadline into buf (NUL-terminated).  Returns
 * the byte count, or -ETIMEDOUT. */
static ssize_t read_all(int fd, char *buf, size_t max, int64_t deadline)
{
	size_t n = 0;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t k;

		if (poll(&p, 1, mp_time_left_ms(deadline)) <= 0) {
			buf[n] = 0;
			return -ETIMEDOUT;
		}
		k = recv(fd, buf + n, max - 1 - n, 0);
		if (k <= 0)
			break;
		n += (size_t)k;
		if (n == max - 1)
			break;
	}
	buf[n] = 0;
	return (ssize_t)n;
}

/* Send req to port, read the whole answer into resp.  Returns the HTTP
 * status, 0 if the answer was not HTTP, or -errno. */
static int http_raw_port(int port, const char *req, size_t len, int tmo_ms)
{
	int64_t deadline = mp_time_deadline(tmo_ms);
	int fd = mp_tcp_connect_local(port), code = 0;
	ssize_t n;

	resp[0] = 0;
	if (fd < 0)
		return fd;
	if (len && send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
		close(fd);
		return -EIO;
	}
	n = read_all(fd, resp, sizeof(resp), deadline);
	close(fd);
	if (n < 0)
		return (int)n;
	if (sscanf(resp, "HTTP/1.1 %d ", &code) != 1)
		return 0;
	return code;
}

/* Send req, half-close, read the answer: a request cut short is closed
 * at once instead of waiting for the read deadline.  As http_raw_port,
 * and -ECONNRESET when closed without an answer. */
static int http_send_eof(const char *req, size_t len)
{
	int64_t deadline = mp_time_deadline(3000);
	int fd = mp_tcp_connect_local(sport), code = 0;
	ssize_t n;

	resp[0] = 0;
	if (fd < 0)
		return fd;
	if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
		close(fd);
		return -EIO;
	}
	shutdown(fd, SHUT_WR);
	n = read_all(fd, resp, sizeof(resp), deadline);
	close(fd);
	if (n < 0)
		return (int)n;
	if (n == 0)
		return -ECONNRESET;
	if (sscanf(resp, "HTTP/1.1 %d ", &code) != 1)
		return 0;
	return code;
}

static int http_raw(const char *req, size_t len)
{
	return http_raw_port(sport, req, len, 3000);
}

static int http_str(const char *req)
{
	return http_raw(req, strlen(req));
}

static int http_get(const char *path)
{
	char req[256];
	int n = snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);

	return http_raw(req, (size_t)n);
}

static const char *body(void)
{
	const char *p = strstr(resp, "\r\n\r\n");

	return p ? p + 4 : "";
}

/* Value of the sample "name" (labels included) in Prometheus text. */
static long long metric(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');

		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return strtoll(p + n + 1, NULL, 10);
		p = nl ? nl + 1 : NULL;
	}
	return NONE;
}

/* In JSON text, the integer member key of the object that holds marker
 * (or that marker opens, when it ends with '{'). */
static long long json_field(const char *text, const char *marker,
			    const char *key)
{
	const char *m = strstr(text, marker), *start, *end, *k;
	size_t ml = strlen(marker);
	char pat[64];

	if (!m)
		return NONE;
	if (ml && marker[ml - 1] == '{')
		m += ml - 1;
	for (start = m; start > text && *start != '{'; start--)
		;
	end = strchr(m, '}');
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	k = strstr(start, pat);
	if (!k || !end || k > end)
		return NONE;
	if (strncmp(k + strlen(pat), "null", 4) == 0)
		return NONE;
	return strtoll(k + strlen(pat), NULL, 10);
}

static int is_name_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	       c == ':' || (!first && c >= '0' && c <= '9');
}

/*
 * Check Prometheus text exposition: HELP and TYPE before each family's
 * samples, types counter/gauge, counters named *_total, samples
 * name{label="v",...} integer.  Returns the number of samples, or -line.
 */
static int metrics_check(const char *text)
{
	char typed[64][80], helped[64][80];
	int ntyped = 0, nhelped = 0, samples = 0, line = 0;
	const char *p = text;

	while (*p) {
		const char *nl = strchr(p, '\n');
		char buf[512], name[80];
		size_t len;
		int k = 0, found = 0;

		line++;
		if (!nl)
			return -line; /* every line ends with a newline */
		len = (size_t)(nl - p);
		if (len == 0 || len >= sizeof(buf))
			return -line;
		memcpy(buf, p, len);
		buf[len] = 0;
		p = nl + 1;
		if (strncmp(buf, "# HELP ", 7) == 0) {
			if (sscanf(buf + 7, "%79s", name) != 1 ||
			    nhelped == 64 || strlen(buf) <= 8 + strlen(name))
				return -line;
			snprintf(helped[nhelped++], 80, "%s", name);
			continue;
		}
		if (strncmp(buf, "# TYPE ", 7) == 0) {
			char type[16];
			size_t nl2;

			if (sscanf(buf + 7, "%79s %15s", name, type) != 2 ||
			    ntyped == 64)
				return -line;
			if (strcmp(type, "counter") && strcmp(type, "gauge"))
				return -line;
			nl2 = strlen(name);
			if (!strcmp(type, "counter") &&
			    (nl2 < 6 || strcmp(name + nl2 - 6, "_total")))
				return -line;
			if (nhelped == 0 || strcmp(helped[nhelped - 1], name))
				return -line;
			snprintf(typed[ntyped++], 80, "%s", name);
			continue;
		}
		if (buf[0] == '#')
			return -line;
		/* sample */
		while (is_name_char(buf[k], k == 0) && k < 79)
			k++;
		if (k == 0)
			return -line;
		memcpy(name, buf, (size_t)k);
		name[k] = 0;
		if (buf[k] == '{') {
			k++;
			for (;;) {
				int s = k;

				while (is_name_char(buf[k], k == s))
					k++;
				if (k == s || buf[k] != '=' ||
				    buf[k + 1] != '"')
					return -line;
				k += 2;
				while (buf[k] && buf[k] != '"')
					k++;
				if (buf[k] != '"')
					return -line;
				k++;
				if (buf[k] == ',') {
					k++;
					continue;
				}
				if (buf[k] != '}')
					return -line;
				k++;
				break;
			}
		}
		if (buf[k] != ' ' || buf[k + 1] == 0)
			return -line;
		for (int j = k + 1; buf[j]; j++)
			if (buf[j] < '0' || buf[j] > '9')
				return -line;
		for (int t = 0; t < ntyped; t++)
			if (!strcmp(typed[t], name))
				found = 1;
		if (!found)
			return -line;
		samples++;
	}
	return samples;
}

/* ---- processes
 * --------------------------------------------------------------- */

/* Children of parent whose command name is exactly comm. */
static int kids(pid_t parent, const char *comm, pid_t *outp, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	char want[64];
	int n = 0;

	if (!d)
		return -1;
	snprintf(want, sizeof(want), "(%s)", comm);
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[512], *lp, *rp, st;
		long ppid;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(buf, sizeof(buf), f)) {
			fclose(f);
			continue;
		}
		fclose(f);
		lp = strchr(buf, '(');
		rp = strrchr(buf, ')');
		if (!lp || !rp || sscanf(rp + 1, " %c %ld", &st, &ppid) != 2)
			continue;
		rp[1] = 0;
		if (ppid != parent || st == 'Z' || strcmp(lp, want))
			continue;
		if (n < max)
			outp[n] = (pid_t)atol(de->d_name);
		n++;
	}
	closedir(d);
	return n;
}

/* Gone or a zombie. */
static int pid_gone(pid_t pid)
{
	char path[64], buf[512], *rp, st = 'X';
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return 1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	rp = strrchr(buf, ')');
	if (rp)
		sscanf(rp + 1, " %c", &st);
	return st == 'Z' || st == 'X';
}

/* Permissions ("r--s", "rw-s") of pid's mapping of the manager's
 * segment; 0, or -1 if it has none.  Every mapping must agree. */
static int seg_perms(pid_t pid, int port, char perms[5])
{
	char path[64], want[64], line[512];
	int found = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/maps", (long)pid);
	snprintf(want, sizeof(want), "/dev/shm/messip-mgr-%d", port);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *sp = strchr(line, ' ');

		if (!sp || !strstr(line, want))
			continue;
		if (found == 0 && strncmp(perms, sp + 1, 4) != 0) {
			found = -1;
			break;
		}
		memcpy(perms, sp + 1, 4);
		perms[4] = 0;
		found = 0;
	}
	fclose(f);
	return found;
}

/* Start a manager with a status page on a free port.  0 or -1. */
static int start_mgr(int workers, const char *extra)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		char conf[512];
		int64_t t0;

		sport = mp_free_port();
		snprintf(conf, sizeof(conf), "status_listen 127.0.0.1:%d\n%s",
			 sport, extra ? extra : "");
		if (mp_mgrproc_start(&mgr, workers, conf) < 0)
			return -1;
		/* The master bound the status port before it served. */
		t0 = mp_time_now_ns();
		while (ms_since(t0) < 2000) {
			if (http_get("/metrics") == 200)
				return 0;
			usleep(20000);
		}
		/* Port taken meanwhile (the manager runs without a page). */
		mp_mgrproc_stop(&mgr);
	}
	return -1;
}

/*
 * Run messip-stat with argv (NULL-terminated, without the program) and
 * MESSIP_MGR set to mgr_env (NULL: unset); stdout into out, stderr into
 * err.  Returns the wait status, or -1 if it ran past 10 s.
 */
static int run_stat(const char *mgr_env, const char *const *argv)
{
	const char *bin = getenv("MP_STAT_BIN");
	int po[2], pe[2], status;
	size_t no = 0, ne = 0;
	int64_t deadline = mp_time_deadline(10000);
	char *args[16];
	int open_o = 1, open_e = 1, i = 0;
	pid_t pid;

	if (!bin)
		bin = "./mgrd/messip-stat";
	args[i++] = (char *)bin;
	for (; argv && *argv && i < 15; argv++)
		args[i++] = (char *)*argv;
	args[i] = NULL;
	if (pipe(po) < 0 || pipe(pe) < 0)
		return -1;
	pid = mp_test_fork();
	if (pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		if (mgr_env)
			setenv("MESSIP_MGR", mgr_env, 1);
		else
			unsetenv("MESSIP_MGR");
		/* Never read the machine's /etc/messip. */
		setenv("MESSIP_CONFIG", "/nonexistent/messip", 1);
		execv(bin, args);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	while ((open_o || open_e) && mp_time_now_ns() < deadline) {
		struct pollfd p[2] = {
			{.fd = open_o ? po[0] : -1, .events = POLLIN},
			{.fd = open_e ? pe[0] : -1, .events = POLLIN}};
		ssize_t k;

		if (poll(p, 2, mp_time_left_ms(deadline)) <= 0)
			break;
		if (p[0].revents) {
			k = read(po[0], out + no, sizeof(out) - 1 - no);
			if (k <= 0)
				open_o = 0;
			else
				no += (size_t)k;
		}
		if (p[1].revents) {
			k = read(pe[0], err + ne, sizeof(err) - 1 - ne);
			if (k <= 0)
				open_e = 0;
			else
				ne += (size_t)k;
		}
	}
	out[no] = 0;
	err[ne] = 0;
	close(po[0]);
	close(pe[0]);
	status = mp_test_wait(pid, 3000);
	if (status == -1)
		mp_test_kill(pid);
	return status;
}

static int exited_with(int status, int code)
{
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

/* A one-shot HTTP server in a child: answers one connection with ans.
 * Returns its port (the child exits after answering); *pidp its pid. */
static int fake_server(const char *ans, size_t len, pid_t *pidp)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	pid_t pid;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	pid = mp_test_fork();
	if (pid == 0) {
		char req[4096];
		size_t n = 0, off = 0;
		int fd;

		/* Not the harness's watchdog: this child ends by itself. */
		signal(SIGALRM, SIG_DFL);
		alarm(10);
		fd = accept(lfd, NULL, NULL);
		while (fd >= 0 && n < sizeof(req) - 1) {
			ssize_t k = recv(fd, req + n, sizeof(req) - 1 - n, 0);

			if (k <= 0)
				break;
			n += (size_t)k;
			req[n] = 0;
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		while (fd >= 0 && off < len) {
			ssize_t k =
				send(fd, ans + off, len - off, MSG_NOSIGNAL);

			if (k <= 0)
				break;
			off += (size_t)k;
		}
		if (fd >= 0)
			close(fd);
		_exit(0);
	}
	close(lfd);
	*pidp = pid;
	return ntohs(sa.sin_port);
}

/* Reap a fake server (it ends once it answered, or at its alarm). */
static void fake_reap(pid_t pid)
{
	if (mp_test_wait(pid, 2000) == -1)
		mp_test_kill(pid);
}

/* messip-stat -s against a fake server answering body with HTTP 200. */
static int stat_against(const char *bodytext, size_t blen, const char *cl)
{
	static char ans[1 << 16];
	char target[64];
	const char *argv[] = {"-s", target, "-t", "3000", NULL};
	int n, port, st;
	pid_t pid;

	n = snprintf(ans, sizeof(ans),
		     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		     "Content-Length: %s\r\nConnection: close\r\n\r\n",
		     cl);
	if (n < 0 || (size_t)n + blen > sizeof(ans))
		return -2;
	memcpy(ans + n, bodytext, blen);
	port = fake_server(ans, (size_t)n + blen, &pid);
	if (port < 0)
		return -2;
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	st = run_stat(NULL, argv);
	fake_reap(pid);
	return st;
}

/* ---- tests
 * ------------------------------------------------------------------- */

/* Registrations, a channel with five unacknowledged buffered messages and
 * a connected client, seen on all three pages with the right numbers. */
static void test_tables_and_numbers(void)
{
	struct tcli srv, cli, idle;
	int32_t h, hc;
	const char *b;

	CU_ASSERT_FATAL(start_mgr(2, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "stq", 8, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "stq", -2, &hc, 3000) == 0);
	CU_ASSERT_FATAL(tcli_hello(&idle, mgr.port, "a<b&\"c", 0) == 0);
	/* The server never acknowledges: all five stay queued. */
	for (int i = 0; i < 5; i++)
		CU_ASSERT(tcli_bsend(&cli, hc, i, "m", 1, 0, NULL, 3000) == 0);
	usleep(50000);

	CU_ASSERT_FATAL(http_get("/status.json") == 200);
	CU_ASSERT(strstr(resp, "Content-Type: application/json\r\n") != NULL);
	b = body();
	CU_ASSERT(strstr(b, "\"format\":1") != NULL);
	CU_ASSERT(json_field(b, "\"name\":\"stq\"", "queued") == 5);
	CU_ASSERT(json_field(b, "\"name\":\"stq\"", "max") == 8);
	CU_ASSERT(json_field(b, "\"name\":\"stq\"", "clients") == 1);
	CU_ASSERT(json_field(b, "\"name\":\"stq\"", "server_regno") ==
		  srv.regno);
	CU_ASSERT(strstr(b, "\"server\":\"srv\"") != NULL);
	CU_ASSERT(json_field(b, "\"id\":\"srv\"", "regno") == srv.regno);
	CU_ASSERT(json_field(b, "\"id\":\"srv\"", "channels") == 1);
	CU_ASSERT(json_field(b, "\"id\":\"cli\"", "connected") == 1);
	CU_ASSERT(json_field(b, "\"id\":\"cli\"", "pid") == getpid());
	CU_ASSERT(strstr(b, "\"id\":\"a<b&\\\"c\"") != NULL);
	CU_ASSERT(strstr(b, "\"peer\":\"127.0.0.1:") != NULL);
	CU_ASSERT(json_field(b, "\"totals\":{", "connections") == 3);
	CU_ASSERT(json_field(b, "\"totals\":{", "registrations") == 3);
	CU_ASSERT(json_field(b, "\"totals\":{", "channels") == 1);
	CU_ASSERT(json_field(b, "\"totals\":{", "queued") == 5);
	CU_ASSERT(json_field(b, "\"totals\":{", "accepted") == 5);

	CU_ASSERT_FATAL(http_get("/") == 200);
	CU_ASSERT(strstr(resp, "Content-Type: text/html; charset=utf-8") !=
		  NULL);
	b = body();
	CU_ASSERT(strstr(b, "<td>stq</td>") != NULL);
	CU_ASSERT(strstr(b, ">5/8</td>") != NULL);
	CU_ASSERT(strstr(b, "<td>srv</td>") != NULL);
	/* Client text is escaped, never markup. */
	CU_ASSERT(strstr(b, "a&lt;b&amp;&quot;c") != NULL);
	CU_ASSERT(strstr(b, "a<b") == NULL);

	CU_ASSERT_FATAL(http_get("/metrics?from=test") == 200);
	CU_ASSERT(strstr(resp, "Content-Type: text/plain; version=0.0.4") !=
		  NULL);
	b = body();
	CU_ASSERT(metric(b, "messip_connections") == 3);
	CU_ASSERT(metric(b, "messip_channels") == 1);
	CU_ASSERT(metric(b, "messip_buffered_queued") == 5);
	CU_ASSERT(metric(b, "messip_channel_clients") == 1);
	CU_ASSERT(metric(b, "messip_registrations{state=\"live\"}") == 3);
	CU_ASSERT(metric(b, "messip_workers") == 2);
	CU_ASSERT(metric(b, "messip_worker_up{worker=\"0\"}") == 1);
	CU_ASSERT(metric(b, "messip_worker_up{worker=\"1\"}") == 1);
	CU_ASSERT(metric(b, "messip_buffered_accepted_total{worker=\"0\"}") +
			  metric(b, "messip_buffered_accepted_total{worker="
				    "\"1\"}") ==
		  5);
	CU_ASSERT(metric(b, "messip_requests_total{worker=\"0\"}") +
			  metric(b, "messip_requests_total{worker=\"1\"}") >=
		  10);
	CU_ASSERT(metric(b, "messip_worker_restarts_total{worker=\"0\"}") == 0);
	CU_ASSERT(strstr(b, "# TYPE messip_requests_total counter\n") != NULL);
	CU_ASSERT(metrics_check(b) > 20);

	/* The server acknowledges nothing but leaves: its channel goes.
	 * It leaves with an orderly end of stream; a bare close() with
	 * unread input would reset the link, which the manager holds for
	 * the grace period while this process lives (protocol.md). */
	CU_ASSERT(shutdown(srv.fd, SHUT_WR) == 0);
	CU_ASSERT(tcli_wait_closed(&srv, 3000) == 0);
	tcli_close(&srv);
	usleep(100000);
	CU_ASSERT(http_get("/metrics") == 200);
	CU_ASSERT(metric(body(), "messip_channels") == 0);
	CU_ASSERT(metric(body(), "messip_buffered_queued") == 0);
	CU_ASSERT(metric(body(), "messip_connections") == 2);
	tcli_close(&cli);
	tcli_close(&idle);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
	/* Stopped with the manager: nobody listens there any more. */
	CU_ASSERT(http_get("/") == -ECONNREFUSED);
}

/* messip-stat: aligned tables, -s and the MESSIP_MGR default, -j, and a
 * clear failure when nothing listens. */
static void test_messip_stat(void)
{
	struct tcli srv, cli;
	char target[64], env[64];
	const char *argv_s[] = {"-s", target, NULL};
	const char *argv_j[] = {"-j", NULL};
	const char *hdr, *row;
	int32_t h, hc, st;

	CU_ASSERT_FATAL(start_mgr(1, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "server1", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "stat-chan", 4, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "c1", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "stat-chan", -2, &hc, 3000) == 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT(tcli_bsend(&cli, hc, i, "x", 1, 0, NULL, 3000) == 0);
	usleep(50000);

	snprintf(target, sizeof(target), "127.0.0.1:%d", sport);
	st = run_stat(NULL, argv_s);
	CU_ASSERT(exited_with(st, 0));
	CU_ASSERT(strstr(out, "CONNECTIONS (2)") != NULL);
	CU_ASSERT(strstr(out, "CHANNELS (1)") != NULL);
	CU_ASSERT(strstr(out, "server1") != NULL);
	/* The QUEUED/MAX column starts where "3/4" starts in its row. */
	hdr = strstr(out, "CHANNEL  ");
	row = strstr(out, "stat-chan");
	CU_ASSERT_FATAL(hdr != NULL && row != NULL);
	{
		const char *hq = strstr(hdr, "QUEUED/MAX");
		const char *rq = strstr(row, "3/4");
		const char *hl = hdr, *rl = row;

		CU_ASSERT_FATAL(hq != NULL && rq != NULL);
		CU_ASSERT(hq - hl == rq - rl);
		CU_ASSERT(strchr(hdr, '\n') > hq && strchr(row, '\n') > rq);
	}

	/* Default: MESSIP_MGR's host with port + 1. */
	snprintf(env, sizeof(env), "127.0.0.1:%d", sport - 1);
	st = run_stat(env, argv_j);
	CU_ASSERT(exited_with(st, 0));
	CU_ASSERT(strncmp(out, "{\"format\":1", 11) == 0);
	CU_ASSERT(strstr(out, "\"name\":\"stat-chan\"") != NULL);

	tcli_close(&srv);
	tcli_close(&cli);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);

	/* Nothing listens any more. */
	st = run_stat(NULL, argv_s);
	CU_ASSERT(exited_with(st, 1));
	CU_ASSERT(strstr(err, "cannot connect") != NULL);
	CU_ASSERT(out[0] == 0);
}

/* messip-stat refuses what is not a status document, and prints hostile
 * but valid text without control characters. */
static void test_messip_stat_bad_documents(void)
{
	static char deep[512], big_cl[32];
	static const char *const bad[] = {
		"{\"format\":1",			/* cut */
		"{\"format\":1} x",			/* trailing data */
		"{\"format\":1,\"x\":\"\xff\"}",	/* invalid UTF-8 */
		"{\"format\":1,\"x\":\"a\tb\"}",	/* raw control */
		"{\"format\":1,\"x\":\"\\q\"}",		/* bad escape */
		"{\"format\":01}",			/* leading zero */
		"{\"format\":1,}",			/* trailing comma */
		"{\"format\":99999999999999999999999}", /* out of range */
		"{\"format\":2,\"manager\":{},\"totals\":{},\"workers\":[],"
		"\"connections\":[],\"channels\":[]}", /* unknown format */
		"{\"format\":1,\"manager\":{},\"totals\":{},\"workers\":{},"
		"\"connections\":[],\"channels\":[]}", /* wrong type */
		"{\"format\":1,\"manager\":{},\"totals\":{},\"workers\":[1],"
		"\"connections\":[],\"channels\":[]}", /* row not an object */
		"[]",
		"",
	};
	static const char hostile[] =
		"{\"format\":1,\"manager\":{\"listen\":\"\\u001b[2J\","
		"\"master_pid\":1,\"workers\":0,\"time\":0},\"totals\":{},"
		"\"workers\":[],\"connections\":[{\"regno\":7,\"id\":"
		"\"\\u001b]0;x\\u0007\\ud800\",\"pid\":-1,\"peer\":\"\xc2\x9b"
		"31m\",\"since\":99999999999999999,\"worker\":null,"
		"\"state\":\"live\",\"channels\":0,\"connected\":0}],"
		"\"channels\":[{\"name\":\"caf\xc3\xa9 \\ud83d\\ude00\","
		"\"queued\":null,\"max\":4,\"clients\":0}]}";
	int st, port;
	pid_t pid;
	char target[64];
	const char *argv[] = {"-s", target, "-t", "3000", NULL};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char cl[32];

		snprintf(cl, sizeof(cl), "%zu", strlen(bad[i]));
		st = stat_against(bad[i], strlen(bad[i]), cl);
		if (!exited_with(st, 1))
			fprintf(stderr, "document %zu: status %d\n", i, st);
		CU_ASSERT(exited_with(st, 1));
		CU_ASSERT(err[0] != 0);
	}
	/* Nesting past the limit. */
	memset(deep, '[', 200);
	memset(deep + 200, ']', 200);
	st = stat_against(deep, 400, "400");
	CU_ASSERT(exited_with(st, 1));
	CU_ASSERT(strstr(err, "nested") != NULL);
	/* A Content-Length that disagrees: cut. */
	st = stat_against("{}", 2, "500");
	CU_ASSERT(exited_with(st, 1));
	CU_ASSERT(strstr(err, "cut") != NULL);
	snprintf(big_cl, sizeof(big_cl), "x");
	st = stat_against("{}", 2, big_cl);
	CU_ASSERT(exited_with(st, 1));
	/* Not 200, and not HTTP at all. */
	port = fake_server("HTTP/1.1 404 Not Found\r\n\r\n", 26, &pid);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	st = run_stat(NULL, argv);
	fake_reap(pid);
	CU_ASSERT(exited_with(st, 1));
	CU_ASSERT(strstr(err, "404") != NULL);
	port = fake_server("hello\n", 6, &pid);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	st = run_stat(NULL, argv);
	fake_reap(pid);
	CU_ASSERT(exited_with(st, 1));
	CU_ASSERT(strstr(err, "not an HTTP answer") != NULL);

	/* Hostile text: printed, but never a control character. */
	{
		char cl[32];

		snprintf(cl, sizeof(cl), "%zu", strlen(hostile));
		st = stat_against(hostile, strlen(hostile), cl);
	}
	CU_ASSERT(exited_with(st, 0));
	CU_ASSERT(strstr(out, "caf\xc3\xa9 \xf0\x9f\x98\x80") != NULL);
	CU_ASSERT(strstr(out, "\xc2\x9b") == NULL);
	for (const char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 && *p != '\n') {
			CU_FAIL("control character in messip-stat output");
			break;
		}
}

/* A request that is not a plain GET of a known page gets its error, and
 * the page goes on serving. */
static void test_bad_requests(void)
{
	static char big[8192];
	struct tcli c;

	CU_ASSERT_FATAL(start_mgr(1, NULL) == 0);
	CU_ASSERT(http_str("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") ==
		  405);
	CU_ASSERT(strstr(resp, "\r\nAllow: GET\r\n") != NULL);
	CU_ASSERT(http_str("HEAD /metrics HTTP/1.0\r\n\r\n") == 405);
	CU_ASSERT(http_get("/nope") == 404);
	CU_ASSERT(http_get("/metrics/") == 404);
	CU_ASSERT(http_str("garbage\r\n\r\n") == 400);
	CU_ASSERT(http_str("GET / HTTP/2.0\r\n\r\n") == 505);
	CU_ASSERT(http_str("GET http://x/ HTTP/1.1\r\n\r\n") == 400);
	CU_ASSERT(http_str("GET / HTTP/1.1\r\nBad header\r\n\r\n") == 400);
	CU_ASSERT(http_str("GET / HTTP/1.1\r\nHost : x\r\n\r\n") == 400);
	CU_ASSERT(http_raw("GET /\0 HTTP/1.1\r\n\r\n", 19) == 400);
	CU_ASSERT(http_str("GET / HTTP/1.0\n\n") == 200);
	/* Oversized: a header that never ends within the limit. */
	memcpy(big, "GET / HTTP/1.1\r\nX-Pad: ", 23);
	memset(big + 23, 'a', sizeof(big) - 23);
	CU_ASSERT(http_raw(big, sizeof(big)) == 431);
	CU_ASSERT(http_get("/metrics") == 200);
	CU_ASSERT(metric(body(),
			 "messip_status_responses_total{code=\"4xx\"}") == 10);
	/* Random and mutated requests: each is answered with a status the
	 * server may give, or closed; the process never dies. */
	for (int i = 0; i < 300; i++) {
		static const char good[] =
			"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
		char req[600];
		size_t len;
		int code;

		if (i & 1) {
			len = 1 + mp_test_rand() % sizeof(req);
			for (size_t k = 0; k < len; k++)
				req[k] = (char)mp_test_rand();
		} else {
			len = sizeof(good) - 1;
			memcpy(req, good, len);
			for (int k = 0; k < 1 + (int)(mp_test_rand() % 4); k++)
				req[mp_test_rand() % len] =
					(char)mp_test_rand();
		}
		code = http_send_eof(req, len);
		if (!(code == -ECONNRESET || code == 200 || code == 400 ||
		      code == 404 || code == 405 || code == 431 ||
		      code == 505)) {
			fprintf(stderr, "random request %d: answer %d\n", i,
				code);
			CU_FAIL("unexpected answer to a random request");
			break;
		}
	}
	/* Nothing of that reached the data path or killed the page. */
	CU_ASSERT(http_get("/metrics") == 200);
	CU_ASSERT(metric(body(), "messip_status_restarts_total") == 0);
	CU_ASSERT(tcli_hello(&c, mgr.port, "still", 0) == 0);
	CU_ASSERT(tcli_ping(&c) == 0);
	tcli_close(&c);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* Slow clients that drip a header byte by byte are closed at the read
 * deadline (2 s), with a 408; meanwhile the page and the API serve. */
static void test_slowloris(void)
{
	enum { N = 4 };
	int fds[N], closed_ms[N], saw408[N];
	int64_t t0;
	struct tcli c;
	int served = 0, fast = 0, left = N;

	CU_ASSERT_FATAL(start_mgr(1, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&c, mgr.port, "api", 0) == 0);
	t0 = mp_time_now_ns();
	for (int i = 0; i < N; i++) {
		fds[i] = mp_tcp_connect_local(sport);
		CU_ASSERT_FATAL(fds[i] >= 0);
		CU_ASSERT(send(fds[i], "GET / HTTP/1.1\r\n", 16,
			       MSG_NOSIGNAL) == 16);
		closed_ms[i] = -1;
		saw408[i] = 0;
	}
	while (left > 0 && ms_since(t0) < 5000) {
		usleep(100000);
		for (int i = 0; i < N; i++) {
			struct pollfd p = {.fd = fds[i], .events = POLLIN};
			char buf[512];

			if (closed_ms[i] >= 0)
				continue;
			if (poll(&p, 1, 0) == 1) {
				ssize_t k =
					recv(fds[i], buf, sizeof(buf) - 1, 0);

				if (k > 0) {
					buf[k] = 0;
					saw408[i] |=
						strstr(buf, " 408 ") != NULL;
					continue;
				}
				closed_ms[i] = (int)ms_since(t0);
				left--;
				continue;
			}
			/* Drip, but not past the deadline: a byte sent to
			 * a closed socket would reset it, and the reset
			 * could destroy the 408 before we read it. */
			if (ms_since(t0) < 1500 &&
			    send(fds[i], "X", 1, MSG_NOSIGNAL) < 0) {
				closed_ms[i] = (int)ms_since(t0);
				left--;
			}
		}
		if (!served && ms_since(t0) > 500) {
			int64_t t1 = mp_time_now_ns();

			served = http_get("/metrics") == 200;
			fast = ms_since(t1) < 500;
			CU_ASSERT(tcli_ping(&c) == 0);
		}
	}
	CU_ASSERT(served);
	CU_ASSERT(fast);
	for (int i = 0; i < N; i++) {
		fprintf(stderr, "slow client %d closed after %d ms%s\n", i,
			closed_ms[i], saw408[i] ? " (408)" : "");
		CU_ASSERT(closed_ms[i] >= 1800 && closed_ms[i] <= 3000);
		CU_ASSERT(saw408[i]);
		close(fds[i]);
	}
	CU_ASSERT(tcli_ping(&c) == 0);
	tcli_close(&c);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* More idle connections than slots: the extra ones get 503 at once, and
 * the page serves again once the idle ones hit their deadline. */
static void test_connection_slots(void)
{
	enum { N = 20 };
	int fds[N], n503 = 0;
	int64_t t0;

	CU_ASSERT_FATAL(start_mgr(1, NULL) == 0);
	for (int i = 0; i < N; i++)
		fds[i] = mp_tcp_connect_local(sport);
	usleep(200000);
	t0 = mp_time_now_ns();
	CU_ASSERT(http_get("/metrics") == 503);
	CU_ASSERT(ms_since(t0) < 1000);
	for (int i = 0; i < N; i++) {
		struct pollfd p = {.fd = fds[i], .events = POLLIN};
		char buf[256];

		if (fds[i] >= 0 && poll(&p, 1, 0) == 1 &&
		    recv(fds[i], buf, sizeof(buf), MSG_PEEK) > 12 &&
		    strncmp(buf, "HTTP/1.1 503", 12) == 0)
			n503++;
	}
	CU_ASSERT(n503 == N - 16);
	t0 = mp_time_now_ns();
	while (ms_since(t0) < 4000 && http_get("/metrics") != 200)
		usleep(100000);
	CU_ASSERT(strncmp(resp, "HTTP/1.1 200", 12) == 0);
	CU_ASSERT(
		metric(body(), "messip_status_responses_total{code=\"5xx\"}") >=
		N - 16 + 1);
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* Workers' pids from /status.json, in worker order.  Count or -1. */
static int worker_pids(pid_t *pids, int n)
{
	if (http_get("/status.json") != 200)
		return -1;
	for (int w = 0; w < n; w++) {
		char marker[48];

		snprintf(marker, sizeof(marker), "{\"worker\":%d,\"pid\"", w);
		pids[w] = (pid_t)json_field(body(), marker, "pid");
		if (pids[w] <= 0)
			return -1;
	}
	return n;
}

/* kill -9 of a worker is counted (per worker); of the status process, it
 * is restarted and counted, and the workers are left alone. */
static void test_restarts_counted(void)
{
	pid_t before[2], after[2], stat[MAX_KIDS];
	int64_t t0;
	int ok = 0;

	CU_ASSERT_FATAL(start_mgr(2, NULL) == 0);
	CU_ASSERT_FATAL(worker_pids(before, 2) == 2);
	kill(before[1], SIGKILL);
	t0 = mp_time_now_ns();
	while (!ok && ms_since(t0) < 3000) {
		usleep(50000);
		ok = http_get("/metrics") == 200 &&
		     metric(body(),
			    "messip_worker_restarts_total{worker=\"1\"}") ==
			     1 &&
		     metric(body(), "messip_worker_up{worker=\"1\"}") == 1;
	}
	CU_ASSERT(ok);
	CU_ASSERT(metric(body(),
			 "messip_worker_restarts_total{worker=\"0\"}") == 0);
	CU_ASSERT(worker_pids(after, 2) == 2);
	CU_ASSERT(after[0] == before[0] && after[1] != before[1]);

	/* The status process itself: it maps the segment read-only. */
	CU_ASSERT_FATAL(kids(mgr.pid, "messip-mgr-stat", stat, MAX_KIDS) == 1);
	CU_ASSERT(kids(mgr.pid, "messip-mgr", after, 2) == 2);
	{
		char perms[5] = "";

		CU_ASSERT(seg_perms(stat[0], mgr.port, perms) == 0);
		CU_ASSERT_STRING_EQUAL(perms, "r--s");
		CU_ASSERT(seg_perms(after[0], mgr.port, perms) == 0);
		CU_ASSERT_STRING_EQUAL(perms, "rw-s");
	}
	kill(stat[0], SIGKILL);
	t0 = mp_time_now_ns();
	ok = 0;
	while (!ok && ms_since(t0) < 3000) {
		usleep(20000);
		ok = http_get("/metrics") == 200;
	}
	CU_ASSERT(ok);
	fprintf(stderr, "status page back after %lld ms\n",
		(long long)ms_since(t0));
	CU_ASSERT(ms_since(t0) < 1500);
	CU_ASSERT(metric(body(), "messip_status_restarts_total") == 1);
	CU_ASSERT(worker_pids(after, 2) == 2);
	CU_ASSERT(after[0] == before[0]);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* The master dies: the status process follows within a second. */
static void test_master_death(void)
{
	pid_t stat[MAX_KIDS], work[MAX_KIDS];
	int64_t t0;
	int nw;

	CU_ASSERT_FATAL(start_mgr(1, NULL) == 0);
	CU_ASSERT_FATAL(kids(mgr.pid, "messip-mgr-stat", stat, MAX_KIDS) == 1);
	nw = kids(mgr.pid, "messip-mgr", work, MAX_KIDS);
	CU_ASSERT_FATAL(nw == 1);
	mp_test_kill(mgr.pid);
	mgr.pid = 0;
	t0 = mp_time_now_ns();
	while (!(pid_gone(stat[0]) && pid_gone(work[0])) && ms_since(t0) < 3000)
		usleep(20000);
	fprintf(stderr, "status process gone %lld ms after the master\n",
		(long long)ms_since(t0));
	CU_ASSERT(pid_gone(stat[0]));
	CU_ASSERT(ms_since(t0) < 1500);
	CU_ASSERT(http_get("/") == -ECONNREFUSED);
	mp_mgrproc_stop(&mgr); /* config file and segment */
}

/*
 * status_listen off (mp_mgrproc's default): no status process, no page.
 * The master forks its workers, then the status process if it has one,
 * then enters its loop, which alone reaps and respawns workers: a worker
 * killed and respawned proves the master got past the point where it
 * would have started the status process (no timing involved).
 */
static void test_status_off(void)
{
	pid_t k[MAX_KIDS], k2[MAX_KIDS];
	int64_t t0;
	int n, respawned = 0;

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 2, NULL) == 0);
	t0 = mp_time_now_ns();
	while ((n = kids(mgr.pid, "messip-mgr", k, MAX_KIDS)) < 2 &&
	       ms_since(t0) < 10000)
		usleep(5000);
	CU_ASSERT_FATAL(n == 2);
	CU_ASSERT_FATAL(kill(k[0], SIGKILL) == 0);
	t0 = mp_time_now_ns();
	while (!respawned && ms_since(t0) < 10000) {
		n = kids(mgr.pid, "messip-mgr", k2, MAX_KIDS);
		respawned = n >= 2 && k2[0] != k[0] && k2[1] != k[0];
		if (!respawned)
			usleep(5000);
	}
	CU_ASSERT_FATAL(respawned);
	/* Two workers, and nothing else (a status process would show as
	 * messip-mgr until it names itself). */
	CU_ASSERT(kids(mgr.pid, "messip-mgr", k, MAX_KIDS) == 2);
	CU_ASSERT(kids(mgr.pid, "messip-mgr-stat", k, MAX_KIDS) == 0);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* The status port is taken: the manager starts and serves anyway. */
static void test_status_port_taken(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0), fd;
	char conf[64];
	struct tcli c;
	pid_t k[MAX_KIDS];

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CU_ASSERT_FATAL(lfd >= 0 &&
			bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
			listen(lfd, 4) == 0 &&
			getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
	snprintf(conf, sizeof(conf), "status_listen 127.0.0.1:%d\n",
		 ntohs(sa.sin_port));
	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, conf) == 0);
	CU_ASSERT(tcli_hello(&c, mgr.port, "x", 0) == 0);
	CU_ASSERT(tcli_ping(&c) == 0);
	tcli_close(&c);
	CU_ASSERT(kids(mgr.pid, "messip-mgr-stat", k, MAX_KIDS) == 0);
	/* Our listener still owns the port. */
	fd = mp_tcp_connect_local(ntohs(sa.sin_port));
	CU_ASSERT(fd >= 0);
	if (fd >= 0) {
		int a = accept(lfd, NULL, NULL);

		CU_ASSERT(a >= 0);
		if (a >= 0)
			close(a);
		close(fd);
	}
	close(lfd);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* A status page beyond loopback needs allow_remote, like the API. */
static void test_status_remote_refused(void)
{
	char path[128];
	const char *bin = getenv("MP_MGR_BIN");
	FILE *f;
	int st;
	pid_t pid;

	if (!bin)
		bin = "./mgrd/messip-mgr";
	snprintf(path, sizeof(path), "/tmp/messip-test-%ld-status.conf",
		 (long)getpid());
	f = fopen(path, "w");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f, "listen 127.0.0.1:9999\nstatus_listen 0.0.0.0:9998\n");
	fclose(f);
	pid = mp_test_fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		dup2(nul, 1);
		dup2(nul, 2);
		execl(bin, bin, "-t", "-c", path, (char *)NULL);
		_exit(127);
	}
	st = mp_test_wait(pid, 5000);
	CU_ASSERT(exited_with(st, 1));
	f = fopen(path, "a");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f, "allow_remote yes\n");
	fclose(f);
	pid = mp_test_fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		dup2(nul, 1);
		dup2(nul, 2);
		execl(bin, bin, "-t", "-c", path, (char *)NULL);
		_exit(127);
	}
	st = mp_test_wait(pid, 5000);
	CU_ASSERT(exited_with(st, 0));
	unlink(path);
}

/*
 * Garbage over the segment's tables and ring headers, with the workers
 * stopped so only the status process reads it: every page still answers,
 * the status process does not die, messip-stat still parses the page.
 */
static void test_corrupt_segment(void)
{
	struct mgr_config c;
	struct mgr_layout lay;
	char err_[MGR_ERR_MAX], seg[64], target[64];
	const char *argv[] = {"-s", target, NULL};
	pid_t work[MAX_KIDS], stat[MAX_KIDS];
	uint8_t *p;
	mp_shm_t shm;
	int nw, rounds;

	CU_ASSERT_FATAL(start_mgr(2, "max_connections 100\n"
				     "max_channels 64\nmax_links 256\n") == 0);
	CU_ASSERT_FATAL(mgr_config_load(&c, mgr.conf, err_, sizeof(err_)) == 0);
	CU_ASSERT_FATAL(mgr_state_layout(&c, &lay) > 0);
	snprintf(seg, sizeof(seg), "/messip-mgr-%d", mgr.port);
	CU_ASSERT_FATAL(mp_shm_open(&shm, seg, MGR_SHM_MAGIC, MGR_SHM_VERSION,
				    lay.total) == 0);
	nw = kids(mgr.pid, "messip-mgr", work, MAX_KIDS);
	CU_ASSERT_FATAL(nw == 2);
	CU_ASSERT_FATAL(kids(mgr.pid, "messip-mgr-stat", stat, MAX_KIDS) == 1);
	for (int i = 0; i < nw; i++)
		kill(work[i], SIGSTOP);
	p = mp_shm_payload(&shm);
	for (rounds = 0; rounds < 4; rounds++) {
		/* Random records; half of them with a valid-looking state so
		 * that the reader goes past its first check. */
		for (uint32_t i = 0; i < lay.max_regs; i++) {
			struct mgr_reg_sh *r =
				(void *)(p + lay.off_regs + i * sizeof(*r));

			for (size_t k = 0; k < sizeof(*r); k++)
				((uint8_t *)r)[k] = (uint8_t)mp_test_rand();
			if (mp_test_rand() & 1)
				r->state = 1 + mp_test_rand() % 3;
		}
		for (uint32_t i = 0; i < lay.max_channels; i++) {
			struct mgr_ch_sh *ch =
				(void *)(p + lay.off_chans + i * sizeof(*ch));
			uint8_t *ring = p + lay.off_rings + i * lay.ring_size;

			for (size_t k = 0; k < sizeof(*ch); k++)
				((uint8_t *)ch)[k] = (uint8_t)mp_test_rand();
			if (mp_test_rand() & 1) {
				ch->state = CH_LIVE;
				ch->creator =
					mp_test_rand() % (lay.max_regs + 4);
			}
			/* Ring header: keep the magic (first word) on
			 * half of them, scramble the rest. */
			for (size_t k = (mp_test_rand() & 1) ? 4 : 0; k < 512;
			     k++)
				ring[k] = (uint8_t)mp_test_rand();
		}
		for (uint32_t i = 0; i < lay.max_links; i++) {
			struct mgr_link_sh *l =
				(void *)(p + lay.off_links + i * sizeof(*l));

			for (size_t k = 0; k < sizeof(*l); k++)
				((uint8_t *)l)[k] = (uint8_t)mp_test_rand();
			if (mp_test_rand() & 1)
				l->state = LINK_CONNECTED;
		}
		CU_ASSERT(http_get("/") == 200);
		CU_ASSERT(http_get("/status.json") == 200);
		CU_ASSERT(http_get("/metrics") == 200);
		CU_ASSERT(metrics_check(body()) > 20);
		snprintf(target, sizeof(target), "127.0.0.1:%d", sport);
		CU_ASSERT(exited_with(run_stat(NULL, argv), 0));
	}
	CU_ASSERT(metric(body(), "messip_status_restarts_total") == 0);
	fprintf(stderr, "last snapshot skipped %lld corrupt records\n",
		metric(body(), "messip_status_skipped_records"));
	CU_ASSERT(metric(body(), "messip_status_skipped_records") > 0);
	CU_ASSERT(!pid_gone(stat[0]));
	/* The data path was never meant to survive this: end it all. */
	mp_shm_close(&shm);
	mp_test_kill(mgr.pid);
	mgr.pid = 0;
	for (int i = 0; i < nw; i++) {
		kill(work[i], SIGKILL);
		kill(work[i], SIGCONT);
	}
	for (int i = 0; i < 100 && !(pid_gone(work[0]) && pid_gone(work[1]) &&
				     pid_gone(stat[0]));
	     i++)
		usleep(20000);
	mp_mgrproc_stop(&mgr);
}

static const struct mp_test_case tests[] = {
	{"status tables show registrations, channels and queued messages",
	 test_tables_and_numbers},
	{"messip-stat prints aligned tables, fails clearly without a page",
	 test_messip_stat},
	{"messip-stat refuses broken documents, neutralises hostile text",
	 test_messip_stat_bad_documents},
	{"wrong method, unknown path, garbage, oversized request",
	 test_bad_requests},
	{"slowloris closed at the read deadline while others are served",
	 test_slowloris},
	{"more connections than slots: 503, then served again",
	 test_connection_slots},
	{"worker and status process killed: restarted and counted",
	 test_restarts_counted},
	{"master dies: status process follows", test_master_death},
	{"status_listen off: no status process", test_status_off},
	{"status port taken: the manager serves without a page",
	 test_status_port_taken},
	{"status_listen beyond loopback needs allow_remote",
	 test_status_remote_refused},
	{"corrupt segment: the status page survives", test_corrupt_segment},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_mgr_status", 90);
	return mp_test_main("mgr_status", tests);
}
