/*
 * mp_futex — process-shared futex wait and wake on a 32-bit word.
 *
 * The word may live in a MAP_SHARED mapping used by several processes, so
 * the shared (not FUTEX_PRIVATE) operations are used.  Waits take an
 * absolute CLOCK_MONOTONIC deadline (mp_time.h).  Callers must re-check
 * their condition after every return: wake-ups may be spurious.
 */
#ifndef MP_FUTEX_H
#define MP_FUTEX_H

#include <stdint.h>

/* Sleep while *word == expected, until woken or deadline_ns.
 * Returns 0 (woken, or *word already differed, or a signal interrupted),
 * -ETIMEDOUT when the deadline passed. */
int mp_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns);

/* Wake up to n waiters on word (INT32_MAX: all).  Returns the number woken. */
int mp_futex_wake(uint32_t *word, int n);

/* One iteration of a polite busy-wait (the CPU's pause instruction). */
void mp_cpu_relax(void);

/*
 * Asymmetric fences (membarrier(2), MEMBARRIER_CMD_GLOBAL_EXPEDITED): a
 * side that publishes often may pair a plain store with a later load, and
 * let the rare side (about to sleep) pay for the full barrier both need:
 * mp_fence_remote() makes every running thread of every registered
 * process execute a full memory barrier before it returns.
 *
 * mp_fence_register: make this process a target.  1 if it is (the result
 * is kept per process), 0 if the kernel does not offer it (the caller
 * must then use real fences itself).
 * mp_fence_remote: 0, or -errno (not available: the caller must not rely
 * on it, e.g. sleep in short slices).  A few microseconds (IPIs).
 *
 * Test knob: MESSIP_NO_MEMBARRIER=1 in a process's environment (read
 * once per process) makes both behave as on a kernel without membarrier
 * there: register returns 0, remote -ENOSYS.
 */
int mp_fence_register(void);
int mp_fence_remote(void);

#endif
