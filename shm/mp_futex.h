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

#endif
