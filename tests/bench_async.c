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
 * MESSIP_OPT_GATHER, which writes posted requests in batches) and for the
 * same-host shared-memory path.
 *
 * Usage: bench_async [-t SECONDS] [-w WINDOW]; the manager is
 * $MP_MGR_BIN (default ./mgrd/messip-mgr).  Exit 0 when everything ran
 * (the ratio is reported, not enforced: the machine is shared).
 */
#include "config.h"

#include <errno.h>
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

static void server(const char *name, int gate)
{
	static char buf[MSG];
	messip_cnx_t *cnx = messip_connect(mgr.ref, "bsrv", 5000);
	messip_channel_t *ch =
		cnx ? messip_channel_create(cnx, name, 5000, 0) : NULL;
	char c = ch ? 'y' : 'n';

	if (write(gate, &c, 1) != 1 || !ch)
		_exit(1);
	for (;;) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 30000);

		if (r == MESSIP_MSG_TIMEOUT)
			_exit(1);
		if (r < 0)
			continue;
		messip_reply(ch, r, type, buf, ch->datalenr, 5000);
		if (type == 9)
			break;
	}
	messip_disconnect(cnx, 1000);
	_exit(0);
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

/* One path: a server, alternating trials; 0 or -1.  gather: the client
 * handle sets MESSIP_OPT_GATHER (async posts written in batches). */
static int run(const char *label, bool tcp, bool gather)
{
	char name[48];
	double best_s = 0, best_a = 0;
	int gate[2], st;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pid_t pid;
	char c = 0;

	if (tcp)
		setenv("MESSIP_NO_SHM", "1", 1);
	else
		unsetenv("MESSIP_NO_SHM");
	snprintf(name, sizeof(name), "bench-async-%ld-%d", (long)getpid(), tcp);
	if (pipe(gate) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		close(gate[0]);
		messip_init();
		server(name, gate[1]);
	}
	close(gate[1]);
	if (pid < 0 || read(gate[0], &c, 1) != 1 || c != 'y') {
		close(gate[0]);
		return -1;
	}
	close(gate[0]);
	cnx = messip_connect(mgr.ref, "bcli", 5000);
	ch = cnx ? messip_channel_connect(cnx, name, 5000) : NULL;
	if (!ch) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		return -1;
	}
	if (messip_channel_path(ch) !=
	    (tcp ? MESSIP_PATH_TCP : MESSIP_PATH_SHM))
		fprintf(stderr, "%s: unexpected path\n", label);
	for (int i = 0; i < TRIALS; i++) {
		double s = sync_rate(ch), a;

		messip_channel_option(ch, MESSIP_OPT_GATHER, gather);
		a = async_rate(ch);
		messip_channel_option(ch, MESSIP_OPT_GATHER, 0);

		if (s < 0 || a < 0) {
			fprintf(stderr, "%s: trial failed: %s\n", label,
				strerror(errno));
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		best_s = s > best_s ? s : best_s;
		best_a = a > best_a ? a : best_a;
	}
	printf("%-6s %3d-byte  sync %10.0f/s  async(%d out) %10.0f/s  "
	       "ratio %6.1fx\n",
	       label, MSG, best_s, window, best_a, best_a / best_s);
	messip_send(ch, 9, NULL, 0, NULL, NULL, 0, 5000);
	waitpid(pid, &st, 0);
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
	if (run("tcp", true, false) < 0 || run("tcp+g", true, true) < 0 ||
	    run("shm", false, false) < 0)
		rc = 1;
	mp_mgrproc_stop(&mgr);
	return rc;
}
