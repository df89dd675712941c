/*
 * mp_time — monotonic clock and deadlines.
 *
 * Every blocking call in messip takes a deadline: an absolute time in
 * nanoseconds on CLOCK_MONOTONIC, or MP_TIME_FOREVER.  Converting a
 * millisecond timeout into a deadline once, at the public boundary, is
 * what makes a timeout cover the *whole* call however many waits it does.
 */
#ifndef MP_TIME_H
#define MP_TIME_H

#include <stdint.h>
#include <time.h>

#define MP_TIME_FOREVER INT64_MAX

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t mp_time_now_ns(void);

/* Deadline for a timeout in milliseconds: msec < 0 -> MP_TIME_FOREVER,
 * msec == 0 -> now (poll), msec > 0 -> now + msec. */
int64_t mp_time_deadline(int msec);

/* Milliseconds left until deadline, rounded up, clamped to [0, INT32_MAX];
 * -1 for MP_TIME_FOREVER (suits poll(2) and epoll_wait(2)). */
int mp_time_left_ms(int64_t deadline_ns);

/* Fill *ts with deadline_ns as an absolute CLOCK_MONOTONIC timespec. */
void mp_time_to_timespec(int64_t deadline_ns, struct timespec *ts);

#endif
