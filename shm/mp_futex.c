/*
 * mp_futex — process-shared futex wait and wake (see mp_futex.h).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mp_futex.h"
#include "mp_time.h"

int mp_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
	struct timespec ts, *tsp = NULL;
	long rc;

	if (deadline_ns != MP_TIME_FOREVER) {
		if (deadline_ns <= mp_time_now_ns())
			return -ETIMEDOUT;
		mp_time_to_timespec(deadline_ns, &ts);
		tsp = &ts;
	}
	/* FUTEX_WAIT_BITSET takes an absolute deadline on CLOCK_MONOTONIC,
	 * so a wait cut short by a signal and retried keeps its deadline. */
	rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tsp, NULL,
		     FUTEX_BITSET_MATCH_ANY);
	if (rc == -1 && errno == ETIMEDOUT)
		return -ETIMEDOUT;
	return 0;
}

int mp_futex_wake(uint32_t *word, int n)
{
	long rc = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);

	return rc < 0 ? 0 : (int)rc;
}

void mp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/*
 * MESSIP_NO_MEMBARRIER=1 in the environment makes this process behave as
 * if the kernel had no membarrier (a test knob for the fall-backs: plain
 * stores are not used, fences from afar fail).  Read once per process
 * (a forked child reads it again: tests set it in the child).
 */
static _Atomic pid_t knob_pid;
static _Atomic int knob_off;

static int fence_knob_off(void)
{
	pid_t me = getpid();

	if (atomic_load_explicit(&knob_pid, memory_order_acquire) != me) {
		const char *v = getenv("MESSIP_NO_MEMBARRIER");

		atomic_store_explicit(&knob_off, v && *v && *v != '0',
				      memory_order_relaxed);
		/* Release: a thread that sees our pid sees the value. */
		atomic_store_explicit(&knob_pid, me, memory_order_release);
	}
	return atomic_load_explicit(&knob_off, memory_order_relaxed);
}

/*
 * The pid the decision was made for (0: none yet) and the decision (1
 * registered, 0 not offered).  A forked child registers again (its own
 * mm).  Racing threads register twice, which is harmless; the relaxed
 * atomics publish only the numbers.
 */
static _Atomic pid_t fence_pid;
static _Atomic int fence_ok;

int mp_fence_register(void)
{
	pid_t me = getpid();
	long q;
	int ok;

	if (atomic_load_explicit(&fence_pid, memory_order_acquire) == me)
		return atomic_load_explicit(&fence_ok, memory_order_relaxed);
	q = fence_knob_off() ? -1
			     : syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
	ok = q >= 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
	     (q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
	     syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
		     0, 0) == 0;
	atomic_store_explicit(&fence_ok, ok, memory_order_relaxed);
	/* Release: a thread that sees our pid sees the decision. */
	atomic_store_explicit(&fence_pid, me, memory_order_release);
	return ok;
}

int mp_fence_remote(void)
{
	if (fence_knob_off())
		return -ENOSYS;
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) < 0)
		return -errno;
	return 0;
}
