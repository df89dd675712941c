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

/* ThreadSanitizer does not intercept pthread_mutex_clocklock (clang 14):
 * it would see the unlock of a lock it never saw taken ("unlock of an
 * unlocked mutex") and miss the ordering the lock gives, and so report
 * races on everything the lock protects.  Under TSan the timed lock is
 * announced to it by hand, as its interceptors do for the other calls. */
#if defined(__SANITIZE_THREAD__)
#define MP_LOCK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MP_LOCK_TSAN 1
#endif
#endif
#ifdef MP_LOCK_TSAN
#include <sanitizer/tsan_interface.h>
#endif

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
#ifdef MP_LOCK_TSAN
		/* A trylock first: its interceptor also handles a holder
		 * thread of this process that died (EOWNERDEAD), which the
		 * annotations below cannot express.  One that dies while
		 * we wait is taken as another process's (TSan sees none of
		 * those), so EOWNERDEAD counts as acquired there. */
		rc = pthread_mutex_trylock(&l->mtx);
		if (rc == EBUSY) {
			__tsan_mutex_pre_lock(&l->mtx, __tsan_mutex_try_lock);
			rc = pthread_mutex_clocklock(&l->mtx, CLOCK_MONOTONIC,
						     &ts);
			__tsan_mutex_post_lock(
				&l->mtx,
				__tsan_mutex_try_lock |
					(rc == 0 || rc == EOWNERDEAD
						 ? 0
						 : __tsan_mutex_try_lock_failed),
				0);
		}
#else
		rc = pthread_mutex_clocklock(&l->mtx, CLOCK_MONOTONIC, &ts);
#endif
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
