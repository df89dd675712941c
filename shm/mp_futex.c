/*
 * mp_futex — process-shared futex wait and wake (see mp_futex.h).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
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
