/*
 * test_lock — the robust process-shared lock (mp_lock).
 *
 * Fault families: a holder that is SIGKILLed, that _exits, or whose thread
 * ends while holding the lock; a waiter blocked when the holder dies; a
 * timed acquire against a live holder; and a crowd of processes counting
 * under the lock while some are killed mid-section.  After every death the
 * next acquirer must get MP_LOCK_REPAIR and the lock must then work as
 * usual (never ENOTRECOVERABLE).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_lock.h"
#include "mp_test.h"
#include "mp_time.h"

#define MAXW 64

/* Shared by the test and its children (MAP_SHARED | MAP_ANONYMOUS). */
struct shared {
	mp_lock_sh_t lock;
	uint64_t a;	    /* incremented first in the section */
	uint64_t per[MAXW]; /* then the worker's own count */
	uint64_t orphan;    /* increments whose worker died before per++ */
	uint64_t repairs;
	uint64_t bad; /* repairs that found an impossible state */
	uint32_t stop;
	int32_t holder; /* pid of the last worker to enter the section */
};

static struct shared *sh;

static void setup(void)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(sh != MAP_FAILED);
	CU_ASSERT_EQUAL_FATAL(mp_lock_init(&sh->lock), 0);
}

static void teardown(void)
{
	mp_lock_destroy(&sh->lock);
	munmap(sh, sizeof(*sh));
	sh = NULL;
}

static int64_t ms_since(int64_t t0)
{
	return (mp_time_now_ns() - t0) / 1000000;
}

/* Child: take the lock, tell the parent (one byte on ready), then wait
 * for a byte on go (or forever) and release. */
static pid_t spawn_holder(int ready, int go)
{
	pid_t pid = mp_test_fork();

	if (pid == 0) {
		char c = 'x';

		if (mp_lock_acquire(&sh->lock, MP_TIME_FOREVER) < 0)
			_exit(1);
		if (write(ready, &c, 1) != 1)
			_exit(2);
		if (go < 0) {
			for (;;)
				pause();
		}
		if (read(go, &c, 1) != 1)
			_exit(3);
		mp_lock_release(&sh->lock);
		_exit(0);
	}
	return pid;
}

static void test_acquire_release(void)
{
	setup();
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, MP_TIME_FOREVER), 0);
	/* Error-checking: relocking by the holder fails instead of hanging. */
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(10)),
			-EDEADLK);
	mp_lock_release(&sh->lock);
	/* A deadline in the past still takes a free lock. */
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(0)), 0);
	mp_lock_release(&sh->lock);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(100)), 0);
	mp_lock_release(&sh->lock);
	teardown();
}

static void test_timed_acquire_times_out(void)
{
	int r[2], g[2], st;
	int64_t t0, el;
	pid_t pid;
	char c;

	setup();
	CU_ASSERT_FATAL(pipe(r) == 0 && pipe(g) == 0);
	pid = spawn_holder(r[1], g[0]);
	CU_ASSERT_FATAL(read(r[0], &c, 1) == 1);

	t0 = mp_time_now_ns();
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(200)),
			-ETIMEDOUT);
	el = ms_since(t0);
	CU_ASSERT(el >= 190 && el < 2000);
	/* A deadline already past returns at once. */
	t0 = mp_time_now_ns();
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(0)),
			-ETIMEDOUT);
	CU_ASSERT(ms_since(t0) < 100);

	/* Released by a live holder: an ordinary acquire, no repair. */
	CU_ASSERT(write(g[1], "x", 1) == 1);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(5000)), 0);
	mp_lock_release(&sh->lock);
	st = mp_test_wait(pid, 5000);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(r[0]);
	close(r[1]);
	close(g[0]);
	close(g[1]);
	teardown();
}

/* After a repair the lock is an ordinary lock again, for us and others. */
static void check_normal_after_repair(void)
{
	pid_t pid;
	int st;

	mp_lock_release(&sh->lock);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(1000)), 0);
	mp_lock_release(&sh->lock);
	pid = mp_test_fork();
	if (pid == 0) {
		int rc = mp_lock_acquire(&sh->lock, mp_time_deadline(5000));

		if (rc == 0)
			mp_lock_release(&sh->lock);
		_exit(rc == 0 ? 0 : 1);
	}
	st = mp_test_wait(pid, 10000);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(1000)), 0);
	mp_lock_release(&sh->lock);
}

static void test_holder_sigkilled(void)
{
	int r[2];
	pid_t pid;
	char c;

	setup();
	CU_ASSERT_FATAL(pipe(r) == 0);
	pid = spawn_holder(r[1], -1);
	CU_ASSERT_FATAL(read(r[0], &c, 1) == 1);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(50)),
			-ETIMEDOUT);
	mp_test_kill(pid);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(5000)),
			MP_LOCK_REPAIR);
	check_normal_after_repair();
	close(r[0]);
	close(r[1]);
	teardown();
}

static void test_holder_exits(void)
{
	pid_t pid;
	int st;

	setup();
	pid = mp_test_fork();
	if (pid == 0) {
		if (mp_lock_acquire(&sh->lock, MP_TIME_FOREVER) != 0)
			_exit(1);
		_exit(0); /* leaves without releasing */
	}
	st = mp_test_wait(pid, 5000);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(5000)),
			MP_LOCK_REPAIR);
	check_normal_after_repair();
	teardown();
}

static void *thread_holder(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)mp_lock_acquire(&sh->lock, MP_TIME_FOREVER);
}

static void test_holder_thread_ends(void)
{
	pthread_t th;
	void *rv;

	setup();
	CU_ASSERT_FATAL(pthread_create(&th, NULL, thread_holder, NULL) == 0);
	pthread_join(th, &rv);
	CU_ASSERT_EQUAL((intptr_t)rv, 0);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(5000)),
			MP_LOCK_REPAIR);
	check_normal_after_repair();
	teardown();
}

/* A waiter already blocked (no deadline) when the holder dies wakes up
 * owning the lock, and is told to repair. */
static void test_waiter_when_holder_dies(void)
{
	int r[2], st;
	pid_t holder, waiter;
	char c;

	setup();
	CU_ASSERT_FATAL(pipe(r) == 0);
	holder = spawn_holder(r[1], -1);
	CU_ASSERT_FATAL(read(r[0], &c, 1) == 1);
	waiter = mp_test_fork();
	if (waiter == 0) {
		int rc = mp_lock_acquire(&sh->lock, MP_TIME_FOREVER);

		if (rc >= 0)
			mp_lock_release(&sh->lock);
		_exit(rc == MP_LOCK_REPAIR ? 0 : 10 + (rc < 0 ? -rc : rc));
	}
	usleep(100000);				      /* let it block */
	CU_ASSERT_EQUAL(mp_test_wait(waiter, 0), -1); /* still waiting */
	mp_test_kill(holder);
	st = mp_test_wait(waiter, 5000);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT_EQUAL(mp_lock_acquire(&sh->lock, mp_time_deadline(1000)), 0);
	mp_lock_release(&sh->lock);
	close(r[0]);
	close(r[1]);
	teardown();
}

/* Repair for the counter: a dead worker may have done a++ but not its
 * per[w]++; that difference can only ever be 0 or 1. */
static void repair_counter(void)
{
	uint64_t sum = 0, d;

	sh->repairs++;
	for (int i = 0; i < MAXW; i++)
		sum += sh->per[i];
	d = sh->a - sum - sh->orphan;
	if (d == 1)
		sh->orphan++;
	else if (d != 0)
		sh->bad++;
}

static void counting_worker(int w)
{
	for (;;) {
		int rc = mp_lock_acquire(&sh->lock, mp_time_deadline(10000));
		volatile unsigned spin;

		if (rc < 0)
			_exit(1);
		if (rc == MP_LOCK_REPAIR)
			repair_counter();
		if (__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
			mp_lock_release(&sh->lock);
			_exit(0);
		}
		__atomic_store_n(&sh->holder, (int32_t)getpid(),
				 __ATOMIC_RELAXED);
		sh->a++;
		/* Widen the window between the two writes, so that kills
		 * land inside the section. */
		for (spin = 0; spin < 20000; spin++)
			;
		sh->per[w]++;
		mp_lock_release(&sh->lock);
	}
}

static void test_counting_crowd_with_kills(void)
{
	enum { NW = 6, KILLS = 40 };
	pid_t pids[NW];
	int slot[NW], next = 0, st, rc;
	uint64_t sum = 0;

	setup();
	for (int i = 0; i < NW; i++) {
		slot[i] = next++;
		pids[i] = mp_test_fork();
		if (pids[i] == 0)
			counting_worker(slot[i]);
	}
	for (int k = 0; k < KILLS; k++) {
		int v = (int)(mp_test_rand() % NW);
		pid_t h;

		usleep(2000 + mp_test_rand() % 3000);
		/* Half the time aim at whoever is (probably) in the section,
		 * so that deaths inside it are the common case. */
		h = __atomic_load_n(&sh->holder, __ATOMIC_RELAXED);
		for (int i = 0; i < NW && (k & 1); i++)
			if (pids[i] == h)
				v = i;
		mp_test_kill(pids[v]);
		slot[v] = next++;
		pids[v] = mp_test_fork();
		if (pids[v] == 0)
			counting_worker(slot[v]);
	}
	usleep(20000);
	__atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NW; i++) {
		st = mp_test_wait(pids[i], 15000);
		CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	/* Everyone left cleanly, so this is an ordinary acquire. */
	rc = mp_lock_acquire(&sh->lock, mp_time_deadline(5000));
	CU_ASSERT_EQUAL(rc, 0);
	if (rc == MP_LOCK_REPAIR)
		repair_counter();
	for (int i = 0; i < MAXW; i++)
		sum += sh->per[i];
	fprintf(stderr, "\n  count %llu, repairs %llu, orphans %llu ",
		(unsigned long long)sh->a, (unsigned long long)sh->repairs,
		(unsigned long long)sh->orphan);
	CU_ASSERT(sh->a >= 100);
	CU_ASSERT_EQUAL(sh->bad, 0);
	CU_ASSERT_EQUAL(sh->a, sum + sh->orphan);
	CU_ASSERT(sh->orphan <= sh->repairs);
	CU_ASSERT(sh->repairs <= KILLS);
	/* Most kills land in the (long) section: some repairs must happen. */
	CU_ASSERT(sh->repairs >= KILLS / 8);
	mp_lock_release(&sh->lock);
	teardown();
}

static const struct mp_test_case tests[] = {
	{"acquire, release, relock by holder", test_acquire_release},
	{"timed acquire times out against a live holder",
	 test_timed_acquire_times_out},
	{"holder SIGKILLed: next acquirer repairs", test_holder_sigkilled},
	{"holder _exits holding: next acquirer repairs", test_holder_exits},
	{"holder thread ends holding: repair", test_holder_thread_ends},
	{"waiter blocked when holder dies gets repair",
	 test_waiter_when_holder_dies},
	{"crowd counting under lock, some SIGKILLed mid-section",
	 test_counting_crowd_with_kills},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_lock", 60);
	return mp_test_main("lock", tests);
}
