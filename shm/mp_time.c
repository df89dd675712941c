/*
 * mp_time — monotonic clock and deadlines (see mp_time.h).
 */
#include "config.h"

#include "mp_time.h"

int64_t mp_time_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mp_time_deadline(int msec)
{
	if (msec < 0)
		return MP_TIME_FOREVER;
	return mp_time_now_ns() + (int64_t)msec * 1000000;
}

int mp_time_left_ms(int64_t deadline_ns)
{
	int64_t left;

	if (deadline_ns == MP_TIME_FOREVER)
		return -1;
	left = deadline_ns - mp_time_now_ns();
	if (left <= 0)
		return 0;
	left = (left + 999999) / 1000000;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

void mp_time_to_timespec(int64_t deadline_ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(deadline_ns / 1000000000);
	ts->tv_nsec = (long)(deadline_ns % 1000000000);
}
