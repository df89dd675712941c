/*
 * example.h — the few lines every example shares: start a function in a
 * child process, wait for it, and give up loudly.
 *
 * Every example finds the manager the usual way (messip_connect with a
 * NULL reference: $MESSIP_MGR, /etc/messip, then localhost:9200), forks
 * its own server and clients, and exits 0 when everything went as it
 * should.
 */
#ifndef EXAMPLE_H
#define EXAMPLE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <messip.h>

/* Print what failed (with errno) and exit 1. */
#define EX_CHECK(cond)                                                         \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: failed: %s (%s)\n", __FILE__,  \
				__LINE__, #cond, strerror(errno));             \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Run fn in a child process; the child exits 0 when fn returns. */
static inline pid_t ex_fork(void (*fn)(void))
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	EX_CHECK(pid >= 0);
	if (pid == 0) {
		messip_init();
		fn();
		exit(0);
	}
	return pid;
}

/* Wait for a child; 1 when it exited 0. */
static inline int ex_wait(pid_t pid)
{
	int st;

	if (waitpid(pid, &st, 0) != pid)
		return 0;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Connect to the manager; exits when there is none. */
static inline messip_cnx_t *ex_connect(const char *id)
{
	messip_cnx_t *cnx = messip_connect(NULL, id, 5000);

	if (!cnx) {
		fprintf(stderr,
			"%s: no manager (set MESSIP_MGR=host:port): "
			"%s\n",
			id, strerror(errno));
		exit(1);
	}
	return cnx;
}

#endif
