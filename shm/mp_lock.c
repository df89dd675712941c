/*
 * mp_lock — process-shared robust mutex (see mp_lock.h).
 *
 * Invariant: after mp_lock_acquire() returns >= 0 the mutex is held and
 * consistent.  EOWNERDEAD is turned into MP_LOCK_REPAIR after marking the
 * mutex consistent, so the lock itself never becomes unrecoverable; the
 * data it protects is the caller's to repair.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "mp_lock.h"
#include "mp_time.h"

int mp_lock_init(mp_lock_sh_t *l)
{
	pthread_mutexattr_t a;
	int rc;

	memset(l, 0, sizeof(*l));
	rc = pthread_mutexattr_init(&a);
	if (rc)
		return -rc;
	rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	/* Error-checking: a relock by the holder reports EDEADLK instead of
	 * hanging, and an unlock by a non-holder is refused. */
	if (!rc)
		rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	if (!rc)
		rc = pthread_mutex_init(&l->mtx, &a);
	pthread_mutexattr_destroy(&a);
	return -rc;
}

int mp_lock_acquire(mp_lock_sh_t *l, int64_t deadline_ns)
{
	struct timespec ts;
	int rc;

	if (deadline_ns == MP_TIME_FOREVER) {
		rc = pthread_mutex_lock(&l->mtx);
	} else {
		mp_time_to_timespec(deadline_ns, &ts);
		rc = pthread_mutex_clocklock(&l->mtx, CLOCK_MONOTONIC, &ts);
	}
	switch (rc) {
	case 0:
		return 0;
	case EOWNERDEAD:
		pthread_mutex_consistent(&l->mtx);
		return MP_LOCK_REPAIR;
	case ETIMEDOUT:
	case EDEADLK:
	case ENOTRECOVERABLE:
		return -rc;
	default:
		return -EINVAL;
	}
}

void mp_lock_release(mp_lock_sh_t *l)
{
	pthread_mutex_unlock(&l->mtx);
}

void mp_lock_destroy(mp_lock_sh_t *l)
{
	pthread_mutex_destroy(&l->mtx);
}
