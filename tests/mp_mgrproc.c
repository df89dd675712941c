/*
 * mp_mgrproc — run a real messip-mgr for a test (see mp_mgrproc.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_mgrproc.h"
#include "mp_test.h"

int mp_free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd, port = -1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

int mp_tcp_connect_local(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static int write_conf(struct mp_mgrproc *m, int workers, const char *extra)
{
	FILE *f;

	snprintf(m->conf, sizeof(m->conf), "/tmp/messip-test-%ld-mgr-%d.conf",
		 (long)getpid(), m->port);
	f = fopen(m->conf, "w");
	if (!f)
		return -errno;
	fprintf(f, "# written by mp_mgrproc for a test\n");
	fprintf(f, "listen 127.0.0.1:%d\n", m->port);
	fprintf(f, "status_listen off\n");
	if (workers > 0)
		fprintf(f, "workers %d\n", workers);
	if (extra)
		fputs(extra, f);
	fclose(f);
	return 0;
}

static const char *mgr_bin(void);

int mp_mgrproc_start(struct mp_mgrproc *m, int workers, const char *extra)
{
	const char *bin = mgr_bin();

	memset(m, 0, sizeof(*m));
	for (int attempt = 0; attempt < 5; attempt++) {
		int rc;

		m->port = mp_free_port();
		if (m->port <= 0)
			return -EADDRNOTAVAIL;
		rc = write_conf(m, workers, extra);
		if (rc < 0)
			return rc;
		snprintf(m->ref, sizeof(m->ref), "127.0.0.1:%d", m->port);
		m->pid = mp_test_fork();
		if (m->pid < 0)
			return -errno;
		if (m->pid == 0) {
			execl(bin, bin, "-f", "-c", m->conf, (char *)NULL);
			perror(bin);
			_exit(127);
		}
		/* Wait until it accepts, or died (port taken: try another). */
		for (int i = 0; i < 1000; i++) {
			int fd = mp_tcp_connect_local(m->port);

			if (fd >= 0) {
				close(fd);
				return 0;
			}
			if (waitpid(m->pid, NULL, WNOHANG) == m->pid) {
				mp_test_forget(m->pid);
				m->pid = 0;
				break;
			}
			usleep(10000);
		}
		if (m->pid > 0) {
			mp_test_kill(m->pid);
			m->pid = 0;
		}
		unlink(m->conf);
	}
	return -ECONNREFUSED;
}

int mp_mgrproc_stop(struct mp_mgrproc *m)
{
	int status = -1;

	if (m->pid > 0) {
		kill(m->pid, SIGTERM);
		status = mp_test_wait(m->pid, 5000);
		if (status == -1)
			mp_test_kill(m->pid);
		m->pid = 0;
	}
	if (m->conf[0])
		unlink(m->conf);
	if (status == -1) {
		/* Killed: its segment may be left; a clean stop removes it
		 * itself, which the tests that care assert. */
		char seg[64];

		snprintf(seg, sizeof(seg), "/messip-mgr-%d", m->port);
		shm_unlink(seg);
	}
	return status;
}

static const char *mgr_bin(void)
{
	const char *bin = getenv("MP_MGR_BIN");

	return bin ? bin : "./mgrd/messip-mgr";
}

pid_t mp_mgrproc_exec(const char *conf, int (*setup)(const void *),
		      const void *arg)
{
	pid_t pid = mp_test_fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (setup && setup(arg) < 0)
			_exit(126);
		execl(mgr_bin(), mgr_bin(), "-f", "-c", conf, (char *)NULL);
		perror(mgr_bin());
		_exit(127);
	}
	return pid;
}

int mp_mgrproc_run(const char *conf_text, const char *arg, char *out,
		   size_t outlen)
{
	char conf[128];
	int p[2], st;
	size_t got = 0;
	pid_t pid;
	FILE *f;

	snprintf(conf, sizeof(conf), "/tmp/messip-test-%ld-run.conf",
		 (long)getpid());
	f = fopen(conf, "w");
	if (!f || pipe(p) < 0)
		abort();
	fputs(conf_text, f);
	fclose(f);
	pid = mp_test_fork();
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		execl(mgr_bin(), mgr_bin(), arg, "-c", conf, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	st = mp_test_wait(pid, 5000);
	if (st == -1)
		mp_test_kill(pid);
	while (got + 1 < outlen) {
		ssize_t n = read(p[0], out + got, outlen - 1 - got);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	out[got] = 0;
	close(p[0]);
	unlink(conf);
	return st == -1 ? -1 : (WIFEXITED(st) ? WEXITSTATUS(st) : 128);
}
