/*
 * test_api_util — helpers shared by the libmessip integration tests
 * (tests/test_api_*.c): one real manager per test program, forked server
 * and client processes, and checks that work inside those children.
 *
 * Children report through their exit status (CHILD_CHECK exits 1 with a
 * line on stderr), never through CUnit, whose state belongs to the parent.
 * A child closes every descriptor it inherited, so that no socket of the
 * parent's connections stays open in it: the manager and the servers must
 * see exactly the parent's own closes and deaths.
 */
#ifndef TEST_API_UTIL_H
#define TEST_API_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "messip.h"
#include "mp_mgrproc.h"
#include "mp_test.h"

static struct mp_mgrproc api_mgr;

#define CHILD_CHECK(cond)                                                      \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr,                                        \
				"%s:%d: child %ld: check failed: %s "          \
				"(errno %d %s)\n",                             \
				__FILE__, __LINE__, (long)getpid(), #cond,     \
				errno, strerror(errno));                       \
			_exit(1);                                              \
		}                                                              \
	} while (0)

static inline int64_t api_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void api_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Start the program's manager; exits the program when it cannot. */
static inline void api_start_mgr(int workers, const char *extra)
{
	char conf[1024];
	int rc;

	/* The manager's info lines would drown the test's output. */
	snprintf(conf, sizeof(conf), "log_level %s\n%s",
		 getenv("MP_TEST_VERBOSE") ? "debug" : "warning",
		 extra ? extra : "");
	rc = mp_mgrproc_start(&api_mgr, workers, conf);

	if (rc < 0) {
		fprintf(stderr, "cannot start messip-mgr: %s\n", strerror(-rc));
		exit(1);
	}
}

static inline void api_stop_mgr(void)
{
	mp_mgrproc_stop(&api_mgr);
}

static inline messip_cnx_t *api_connect(const char *id)
{
	return messip_connect(api_mgr.ref, id, 5000);
}

/* Library log lines to stderr, for failing runs (MP_TEST_VERBOSE=1). */
static inline void api_logger(unsigned level, const char *msg)
{
	fprintf(stderr, "[%ld lvl %u] %s\n", (long)getpid(), level, msg);
}

static inline void api_verbose(void)
{
	if (getenv("MP_TEST_VERBOSE")) {
		messip_set_logger(api_logger);
		messip_set_log_level(0x1f);
	}
}

/* Descriptors a child keeps (gates); everything else >= 3 is closed. */
static int api_keep[32];
static int api_nkeep;

static inline int api_kept(int fd)
{
	for (int i = 0; i < api_nkeep; i++)
		if (api_keep[i] == fd)
			return 1;
	return 0;
}

/* Fork a child running fn(arg) and exiting 0 when it returns. */
static inline pid_t api_fork(void (*fn)(void *), void *arg)
{
	pid_t pid = mp_test_fork();

	if (pid == 0) {
		for (int fd = 3; fd < 1024; fd++)
			if (!api_kept(fd))
				close(fd);
		signal(SIGPIPE, SIG_DFL); /* the library must not need it */
		messip_init();
		fn(arg);
		_exit(0);
	}
	return pid;
}

/* Wait for a child; true when it exited with status 0. */
static inline int api_child_ok(pid_t pid, int timeout_ms)
{
	int st = mp_test_wait(pid, timeout_ms);

	if (st == -1) {
		fprintf(stderr, "child %ld did not finish in %d ms\n",
			(long)pid, timeout_ms);
		mp_test_kill(pid);
		return 0;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "child %ld: %s %d\n", (long)pid,
			WIFEXITED(st) ? "exit" : "signal",
			WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		return 0;
	}
	return 1;
}

/* A pipe used as a one-shot "go" signal between processes. */
struct api_gate {
	int fd[2];
};

static inline void api_gate_init(struct api_gate *g)
{
	if (pipe(g->fd) < 0 || api_nkeep + 2 > 32)
		abort();
	api_keep[api_nkeep++] = g->fd[0];
	api_keep[api_nkeep++] = g->fd[1];
}

static inline void api_gate_close(struct api_gate *g)
{
	for (int i = 0; i < api_nkeep; i++) {
		if (api_keep[i] == g->fd[0] || api_keep[i] == g->fd[1]) {
			api_keep[i--] = api_keep[--api_nkeep];
		}
	}
	close(g->fd[0]);
	close(g->fd[1]);
}

static inline void api_gate_signal(struct api_gate *g)
{
	char c = 'x';

	if (write(g->fd[1], &c, 1) != 1)
		abort();
}

static inline int api_gate_wait(struct api_gate *g, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	fd_set set;
	char c;

	FD_ZERO(&set);
	FD_SET(g->fd[0], &set);
	if (select(g->fd[0] + 1, &set, NULL, NULL, &tv) <= 0)
		return 0;
	return read(g->fd[0], &c, 1) == 1;
}

#endif
