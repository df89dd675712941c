/*
 * mp_test — test harness: watchdog, child and shm clean-up, CUnit runner.
 */
#include "config.h"

#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mp_test.h"

#define MAX_CHILDREN 1024

static pid_t children[MAX_CHILDREN];
static int nchildren;
static pid_t test_pid;
static const char *prog = "test";
static unsigned rand_state;
static void (*hooks[8])(void);
static int nhooks;

void mp_test_on_cleanup(void (*fn)(void))
{
	for (int i = 0; i < nhooks; i++)
		if (hooks[i] == fn)
			return;
	if (nhooks < 8)
		hooks[nhooks++] = fn;
}

static void run_hooks(void)
{
	while (nhooks > 0)
		hooks[--nhooks]();
}

/* SIGTERM first, so that a manager started by the test stops cleanly
 * (workers first, segment removed) instead of leaving its workers to
 * report an orphaning and its segment behind; SIGKILL what is still
 * there after a bounded wait. */
static void kill_children(void)
{
	int left = 0;

	for (int i = 0; i < nchildren; i++)
		if (children[i] > 0 && kill(children[i], SIGTERM) == 0)
			left++;
	for (int waited = 0; left > 0 && waited < 3000; waited += 10) {
		for (int i = 0; i < nchildren; i++)
			if (children[i] > 0 &&
			    waitpid(children[i], NULL, WNOHANG) == children[i]) {
				children[i] = -1;
				left--;
			}
		if (left > 0)
			usleep(10000);
	}
	for (int i = 0; i < nchildren; i++)
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
		}
	nchildren = 0;
}

/* Unlink every /dev/shm object carrying this run's tag; returns count. */
static int sweep_shm(void)
{
	char prefix[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(prefix, sizeof(prefix), "messip-test-%ld-", (long)test_pid);
	d = opendir("/dev/shm");
	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char name[300];

		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(name, sizeof(name), "/%s", de->d_name);
		shm_unlink(name);
		n++;
	}
	closedir(d);
	return n;
}

static void cleanup(void)
{
	if (getpid() != test_pid)
		return;
	kill_children();
	run_hooks();
	sweep_shm();
}

static void watchdog(int sig)
{
	static const char msg[] = "mp_test: WATCHDOG expired, killing the test\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more we can do */
	}
	for (int i = 0; i < nchildren; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
	run_hooks();
	sweep_shm();
	_exit(99);
}

void mp_test_init(const char *progname, unsigned watchdog_sec)
{
	const char *seed = getenv("MP_TEST_SEED");

	prog = progname;
	test_pid = getpid();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, watchdog);
	alarm(watchdog_sec);
	atexit(cleanup);
	rand_state = seed ? (unsigned)strtoul(seed, NULL, 0)
			  : (unsigned)time(NULL) ^ (unsigned)test_pid;
	fprintf(stderr, "%s: seed %u (set MP_TEST_SEED to replay)\n", prog,
		rand_state);
}

unsigned mp_test_rand(void)
{
	/* xorshift32: deterministic for a given seed. */
	unsigned x = rand_state ? rand_state : 2463534242u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rand_state = x;
	return x;
}

pid_t mp_test_fork(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid > 0 && nchildren < MAX_CHILDREN)
		children[nchildren++] = pid;
	if (pid == 0) {
		nchildren = 0;
		alarm(0);
	}
	return pid;
}

void mp_test_forget(pid_t pid)
{
	for (int i = 0; i < nchildren; i++)
		if (children[i] == pid)
			children[i] = -1;
}

void mp_test_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	mp_test_forget(pid);
}

int mp_test_wait(pid_t pid, int timeout_ms)
{
	int status;

	for (int waited = 0; waited <= timeout_ms; waited += 5) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			mp_test_forget(pid);
			return status;
		}
		if (r < 0)
			return -1;
		usleep(5000);
	}
	return -1;
}

const char *mp_test_shm_name(char *buf, size_t size, const char *tag)
{
	static unsigned counter;

	snprintf(buf, size, "/messip-test-%ld-%s-%u", (long)test_pid, tag,
		 counter++);
	return buf;
}

static struct {
	void (*fn)(void);
	const char *(*need)(void);
} needs[16];
static int nneeds;

void mp_test_needs(void (*fn)(void), const char *(*need)(void))
{
	if (nneeds == (int)(sizeof(needs) / sizeof(needs[0])))
		abort();
	needs[nneeds].fn = fn;
	needs[nneeds].need = need;
	nneeds++;
}

/* Why the test fn cannot run here, or NULL. */
static const char *need_of(void (*fn)(void))
{
	for (int i = 0; i < nneeds; i++) {
		const char *why;

		if (needs[i].fn == fn && (why = needs[i].need()) != NULL)
			return why;
	}
	return NULL;
}

int mp_test_main(const char *suite, const struct mp_test_case *tests)
{
	CU_pSuite s;
	unsigned failed;
	int left, ntests = 0, nskipped = 0;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 1;
	s = CU_add_suite(suite, NULL, NULL);
	if (!s)
		return 1;
	for (const struct mp_test_case *t = tests; t->name; t++) {
		CU_pTest ct = CU_add_test(s, t->name, t->fn);
		const char *why = need_of(t->fn);

		if (!ct)
			return 1;
		ntests++;
		if (why) {
			/* Inactive: not run, counted apart, not a failure
			 * (CU_set_fail_on_inactive below). */
			CU_set_test_active(ct, CU_FALSE);
			fprintf(stderr, "%s: SKIP \"%s\": %s\n", prog,
				t->name, why);
			nskipped++;
		}
	}
	CU_set_fail_on_inactive(CU_FALSE);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	kill_children();
	run_hooks();
	left = sweep_shm();
	if (left) {
		fprintf(stderr, "%s: FAIL: %d /dev/shm object(s) left behind\n",
			prog, left);
		failed++;
	}
	if (failed)
		return 1;
	if (nskipped) {
		fprintf(stderr, "%s: %d of %d tests skipped\n", prog, nskipped,
			ntests);
		if (nskipped == ntests)
			return 77;
	}
	return 0;
}

const char *mp_test_need_root(void)
{
	return geteuid() == 0 ? NULL : "needs root";
}
