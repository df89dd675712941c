/*
 * bench_async — pipelined asynchronous requests against synchronous
 * round trips, measured in the same run.
 *
 * A forked echo server on a real manager; one client sends 64-byte
 * requests either one at a time (messip_send) or with up to 64
 * outstanding (messip_send_async; the oldest is collected, a new one
 * posted).  Trials of the two alternate, TRIALS each of SECONDS, and the
 * best rate of each is printed with their ratio, for TCP (MESSIP_NO_SHM=1
 * in both processes: "tcp" as posted, "tcp+g" with the client handle's
 * MESSIP_OPT_GATHER, which writes posted requests in batches), for the
 * same-host shared-memory path, and for the in-process path ("inproc":
 * the server is a thread of the benchmark itself).
 *
 * Usage: bench_async [-t SECONDS] [-w WINDOW]; the manager is
 * $MP_MGR_BIN (default ./mgrd/messip-mgr).  Exit 0 when everything ran
 * (the ratio is reported, not enforced: the machine is shared).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "messip.h"
#include "mp_mgrproc.h"

#define MSG    64
#define MAXWIN 64
#define TRIALS 3

static struct mp_mgrproc mgr;
static double seconds = 0.5;
static int window = MAXWIN;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The echo server (a child process, or a thread): 0 when it was told
 * to end, 1 on failure. */
static int server(const char *name, int gate)
{
	char buf[MSG];
	messip_cnx_t *cnx = messip_connect(mgr.ref, "bsrv", 5000);
	messip_channel_t *ch =
		cnx ? messip_channel_create(cnx, name, 5000, 0) : NULL;
	char c = ch ? 'y' : 'n';

	if (write(gate, &c, 1) != 1 || !ch)
		return 1;
	for (;;) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 30000);

		if (r == MESSIP_MSG_TIMEOUT)
			return 1;
		if (r < 0)
			continue;
		messip_reply(ch, r, type, buf, ch->datalenr, 5000);
		if (type == 9)
			break;
	}
	messip_disconnect(cnx, 1000);
	return 0;
}

struct srv_thread {
	char name[48];
	int gate;
};

static void *server_thread(void *p)
{
	struct srv_thread *t = p;

	server(t->name, t->gate);
	return NULL;
}

/* Synchronous round trips for `seconds`: the rate, or -1. */
static double sync_rate(messip_channel_t *ch)
{
	char out[MSG], in[MSG];
	double t0 = now_s(), t;
	long n = 0;
	int32_t answer;

	memset(out, 'x', sizeof(out));
	do {
		for (int i = 0; i < 64; i++, n++)
			if (messip_send(ch, 1, out, MSG, &answer, in,
					sizeof(in), 5000) != 0)
				return -1;
		t = now_s();
	} while (t - t0 < seconds);
	return (double)n / (t - t0);
}

/* Pipelined: `window` outstanding, the oldest collected, a new one
 * posted.  The rate of collected replies, or -1. */
static double async_rate(messip_channel_t *ch)
{
	messip_request_t *q[MAXWIN];
	char out[MSG], in[MSG];
	double t0 = now_s(), t;
	long n = 0;
	int32_t answer;
	unsigned head = 0;

	memset(out, 'y', sizeof(out));
	for (int i = 0; i < window; i++)
		if (!(q[i] = messip_send_async(ch, 1, out, MSG, 5000)))
			return -1;
	do {
		for (int i = 0; i < 64; i++, n++) {
			unsigned k = head++ % (unsigned)window;

			if (messip_request_wait(q[k], &answer, in, sizeof(in),
						5000) != 0)
				return -1;
			q[k] = messip_send_async(ch, 1, out, MSG, 5000);
			if (!q[k])
				return -1;
		}
		t = now_s();
	} while (t - t0 < seconds);
	for (int i = 0; i < window; i++)
		if (messip_request_wait(
			    q[(head + (unsigned)i) % (unsigned)window], &answer,
			    in, sizeof(in), 5000) != 0)
			return -1;
	return (double)n / (t - t0);
}

/* Stop the server after a failure (a thread is left to its timeout). */
static void server_kill(pid_t pid)
{
	int st;

	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
}

/* One path (MESSIP_PATH_*): a server, alternating trials; 0 or -1.
 * gather: the client handle sets MESSIP_OPT_GATHER (async posts written
 * in batches). */
static int run(const char *label, int path, bool gather)
{
	static struct srv_thread thr;
	double best_s = 0, best_a = 0;
	int gate[2], st;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pthread_t tid;
	pid_t pid = 0;
	char c = 0;

	if (path == MESSIP_PATH_TCP)
		setenv("MESSIP_NO_SHM", "1", 1);
	else
		unsetenv("MESSIP_NO_SHM");
	snprintf(thr.name, sizeof(thr.name), "bench-async-%ld-%d",
		 (long)getpid(), path);
	if (pipe(gate) < 0)
		return -1;
	if (path == MESSIP_PATH_INPROC) {
		thr.gate = gate[1];
		if (pthread_create(&tid, NULL, server_thread, &thr) != 0)
			c = 'n';
	} else {
		pid = fork();
		if (pid == 0) {
			close(gate[0]);
			messip_init();
			_exit(server(thr.name, gate[1]));
		}
		close(gate[1]); /* a child that dies: end of file */
		gate[1] = -1;
	}
	if (c == 0 && (pid < 0 || read(gate[0], &c, 1) != 1))
		c = 'n';
	close(gate[0]);
	if (gate[1] >= 0)
		close(gate[1]);
	if (c != 'y') {
		server_kill(pid);
		return -1;
	}
	cnx = messip_connect(mgr.ref, "bcli", 5000);
	ch = cnx ? messip_channel_connect(cnx, thr.name, 5000) : NULL;
	if (!ch) {
		server_kill(pid);
		return -1;
	}
	if (messip_channel_path(ch) != path)
		fprintf(stderr, "%s: unexpected path\n", label);
	for (int i = 0; i < TRIALS; i++) {
		double s = sync_rate(ch), a;

		messip_channel_option(ch, MESSIP_OPT_GATHER, gather);
		a = async_rate(ch);
		messip_channel_option(ch, MESSIP_OPT_GATHER, 0);

		if (s < 0 || a < 0) {
			fprintf(stderr, "%s: trial failed: %s\n", label,
				strerror(errno));
			server_kill(pid);
			return -1;
		}
		best_s = s > best_s ? s : best_s;
		best_a = a > best_a ? a : best_a;
	}
	printf("%-6s %3d-byte  sync %10.0f/s  async(%d out) %10.0f/s  "
	       "ratio %6.1fx\n",
	       label, MSG, best_s, window, best_a, best_a / best_s);
	messip_send(ch, 9, NULL, 0, NULL, NULL, 0, 5000);
	if (pid > 0)
		waitpid(pid, &st, 0);
	else
		pthread_join(tid, NULL);
	messip_disconnect(cnx, 1000);
	unsetenv("MESSIP_NO_SHM");
	return 0;
}

int main(int argc, char **argv)
{
	struct utsname u;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "t:w:")) != -1) {
		if (opt == 't')
			seconds = atof(optarg);
		else if (opt == 'w')
			window = atoi(optarg);
		else
			return 2;
	}
	if (seconds <= 0 || window < 1 || window > MAXWIN) {
		fprintf(stderr, "usage: bench_async [-t SECONDS] [-w 1..64]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (mp_mgrproc_start(&mgr, 1, "log_level warning\n") < 0) {
		fprintf(stderr, "bench_async: cannot start the manager\n");
		return 1;
	}
	uname(&u);
	printf("bench_async: %s %s, nproc %ld; best of %d trials of %.2f s "
	       "each, sync and async alternating\n",
	       u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN), TRIALS,
	       seconds);
	if (run("tcp", MESSIP_PATH_TCP, false) < 0 ||
	    run("tcp+g", MESSIP_PATH_TCP, true) < 0 ||
	    run("shm", MESSIP_PATH_SHM, false) < 0 ||
	    run("inproc", MESSIP_PATH_INPROC, false) < 0)
		rc = 1;
	mp_mgrproc_stop(&mgr);
	return rc;
}
