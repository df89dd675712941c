/*
 * bench_inproc — the in-process path's synchronous round trip (64 bytes
 * each way, one client thread, one server thread, each with its own
 * connection to a real manager) beside the floor two threads reach with
 * a pthread mutex and condition variables passing a 64-byte message back
 * and forth, measured in the same run, trials alternating.
 *
 * Both sides of messip spin briefly before they sleep (mp_spin, bounded
 * by MESSIP_SPIN_US; make bench runs this once with the default and once
 * with MESSIP_SPIN_US=0, which shows what the spin buys).  The condition
 * variable pair never spins: it is the plain "wake the other thread"
 * floor.  Prints rates, the ratio, and exits 0 (a benchmark, not a test).
 *
 * Usage: bench_inproc [seconds per trial, default 0.3] [trials, default 5]
 * The manager is $MP_MGR_BIN (default ./mgrd/messip-mgr).
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "messip.h"
#include "mp_mgrproc.h"
#include "mp_test.h"

#define MSG 64

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the floor: mutex + condition variables ------------------------- */

struct cv {
	pthread_mutex_t m;
	pthread_cond_t to_srv, to_cli;
	int turn; /* 0: client's, 1: server's, 2: stop */
	char msg[MSG];
};

static void *cv_server(void *arg)
{
	struct cv *p = arg;
	char local[MSG];

	pthread_mutex_lock(&p->m);
	for (;;) {
		while (p->turn == 0)
			pthread_cond_wait(&p->to_srv, &p->m);
		if (p->turn == 2)
			break;
		memcpy(local, p->msg, MSG); /* "receive" */
		memcpy(p->msg, local, MSG); /* "reply" */
		p->turn = 0;
		pthread_cond_signal(&p->to_cli);
	}
	pthread_mutex_unlock(&p->m);
	return NULL;
}

static double cv_trial(double secs)
{
	struct cv p;
	pthread_t t;
	char msg[MSG] = {1};
	long n = 0;
	double t0, el;

	memset(&p, 0, sizeof(p));
	pthread_mutex_init(&p.m, NULL);
	pthread_cond_init(&p.to_srv, NULL);
	pthread_cond_init(&p.to_cli, NULL);
	pthread_create(&t, NULL, cv_server, &p);
	t0 = now_s();
	do {
		for (int i = 0; i < 256; i++, n++) {
			pthread_mutex_lock(&p.m);
			memcpy(p.msg, msg, MSG);
			p.turn = 1;
			pthread_cond_signal(&p.to_srv);
			while (p.turn == 1)
				pthread_cond_wait(&p.to_cli, &p.m);
			memcpy(msg, p.msg, MSG);
			pthread_mutex_unlock(&p.m);
		}
		el = now_s() - t0;
	} while (el < secs);
	pthread_mutex_lock(&p.m);
	p.turn = 2;
	pthread_cond_signal(&p.to_srv);
	pthread_mutex_unlock(&p.m);
	pthread_join(t, NULL);
	pthread_cond_destroy(&p.to_srv);
	pthread_cond_destroy(&p.to_cli);
	pthread_mutex_destroy(&p.m);
	return (double)n / el;
}

/* ---- messip, in process --------------------------------------------- */

static const char *g_ref;
static char g_name[48];
static pthread_barrier_t g_ready;

static void *mp_server(void *arg)
{
	messip_cnx_t *cnx = messip_connect(g_ref, "bsrv", 5000);
	messip_channel_t *ch =
		cnx ? messip_channel_create(cnx, g_name, 5000, 0) : NULL;
	char buf[MSG];

	(void)arg;
	pthread_barrier_wait(&g_ready);
	if (!ch)
		return NULL;
	for (;;) {
		int32_t type;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 10000);

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		if (r < 0)
			continue;
		messip_reply(ch, r, type, buf, ch->datalenr, 1000);
		if (type == 2)
			break;
	}
	messip_disconnect(cnx, 2000);
	return NULL;
}

static double mp_trial(messip_channel_t *ch, double secs)
{
	char msg[MSG] = {1}, rep[MSG];
	long n = 0;
	double t0, el;
	int32_t answer;

	t0 = now_s();
	do {
		for (int i = 0; i < 256; i++, n++)
			if (messip_send(ch, 1, msg, MSG, &answer, rep, MSG,
					5000) != 0)
				return -1;
		el = now_s() - t0;
	} while (el < secs);
	return (double)n / el;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 0.3;
	int trials = argc > 2 ? atoi(argv[2]) : 5;
	double best_cv = 0, best_mp = 0;
	struct mp_mgrproc mgr;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	const char *spin = getenv("MESSIP_SPIN_US");
	pthread_t srv;
	int32_t answer;

	mp_test_init("bench_inproc", 300);
	if (mp_mgrproc_start(&mgr, 1, "log_level warning\n") < 0) {
		fprintf(stderr, "bench_inproc: cannot start messip-mgr\n");
		return 1;
	}
	g_ref = mgr.ref;
	snprintf(g_name, sizeof(g_name), "bench-inproc-%d", (int)getpid());
	pthread_barrier_init(&g_ready, NULL, 2);
	pthread_create(&srv, NULL, mp_server, NULL);
	pthread_barrier_wait(&g_ready);
	cnx = messip_connect(g_ref, "bcli", 5000);
	ch = cnx ? messip_channel_connect(cnx, g_name, 5000) : NULL;
	if (!ch || messip_channel_path(ch) != MESSIP_PATH_INPROC) {
		fprintf(stderr, "bench_inproc: no in-process channel\n");
		mp_mgrproc_stop(&mgr);
		return 1;
	}
	mp_trial(ch, 0.05); /* warm up */
	for (int i = 0; i < trials; i++) {
		double a = cv_trial(secs), b = mp_trial(ch, secs);

		if (a > best_cv)
			best_cv = a;
		if (b > best_mp)
			best_mp = b;
	}
	messip_send(ch, 2, "q", 1, &answer, NULL, 0, 5000);
	pthread_join(srv, NULL);
	messip_disconnect(cnx, 2000);
	mp_mgrproc_stop(&mgr);

	printf("in-process round trip, %d B, best of %d x %.2f s "
	       "(MESSIP_SPIN_US=%s)\n",
	       MSG, trials, secs, spin ? spin : "default");
	printf("  %-34s %12.0f /s %9.0f ns\n", "mutex+condvar ping-pong",
	       best_cv, 1e9 / best_cv);
	printf("  %-34s %12.0f /s %9.0f ns\n", "messip_send/receive/reply",
	       best_mp, 1e9 / best_mp);
	printf("  %-34s %12.2fx (target >= 2x)\n", "messip / condvar floor",
	       best_mp / best_cv);
	return 0;
}
