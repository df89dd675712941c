/*
 * mp_test — the harness every test program uses.
 *
 * - mp_test_main() registers a table of tests with CUnit, runs them, and
 *   returns the exit status (0 all passed, 1 any failure).
 * - A watchdog (alarm) kills the whole test, children included, when it
 *   runs past its budget, and says so.
 * - Children started with mp_test_fork() are killed and reaped at exit;
 *   shared-memory names made with mp_test_shm_name() are unlinked at exit,
 *   and the program fails if any /dev/shm object carrying its tag is left.
 */
#ifndef MP_TEST_H
#define MP_TEST_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <sys/types.h>

struct mp_test_case {
	const char *name;
	void (*fn)(void);
};

#define MP_TEST_END { NULL, NULL }

/* Arm the watchdog (seconds) and install clean-up; call first in main. */
void mp_test_init(const char *progname, unsigned watchdog_sec);

/* Run the table as one suite named suite; returns the exit status: 1 if
 * anything failed, else 77 if every test was skipped (mp_test_needs),
 * else 0. */
int mp_test_main(const char *suite, const struct mp_test_case *tests);

/*
 * Before mp_test_main: the test whose function is fn needs something
 * this machine may lack.  need() returns why it cannot run here, or NULL
 * when it can; a test that cannot run is skipped (a CUnit inactive test,
 * not a failure), named on stderr with the reason.  Up to 16 tests.
 */
void mp_test_needs(void (*fn)(void), const char *(*need)(void));

/* A need for mp_test_needs: root (euid 0). */
const char *mp_test_need_root(void);

/* fork() that records the child for clean-up.  Child: 0; parent: pid. */
pid_t mp_test_fork(void);

/* Forget a child that the test has reaped itself. */
void mp_test_forget(pid_t pid);

/* Kill (SIGKILL) and reap one recorded child. */
void mp_test_kill(pid_t pid);

/* Unique shm name "/messip-test-<pid>-<tag>-<n>" registered for unlink. */
const char *mp_test_shm_name(char *buf, size_t size, const char *tag);

/* Wait for child pid, up to timeout_ms; returns its wait status or -1. */
int mp_test_wait(pid_t pid, int timeout_ms);

/* Run fn at exit and when the watchdog fires (up to 8 hooks), before
 * children are killed: for clean-up the harness cannot know (namespaces). */
void mp_test_on_cleanup(void (*fn)(void));

/* Deterministic per-run random source (seed printed on start). */
unsigned mp_test_rand(void);

#endif
