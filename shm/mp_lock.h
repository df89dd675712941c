/*
 * mp_lock — a process-shared, robust mutex that lives in shared memory.
 *
 * A process that dies holding the lock must not wedge anyone: the next
 * acquirer is told (MP_LOCK_REPAIR), owns the lock, and must bring the
 * protected structure back to a consistent state before releasing it.
 * The wrapper marks the mutex consistent itself, so a caller that forgets
 * cannot leave it ENOTRECOVERABLE.
 */
#ifndef MP_LOCK_H
#define MP_LOCK_H

#include <pthread.h>
#include <stdint.h>

#define MP_LOCK_REPAIR 1

/* In-segment layout. */
typedef struct mp_lock_sh {
	pthread_mutex_t mtx;
} mp_lock_sh_t;

/* Initialise in place (creator only).  0 or -errno. */
int mp_lock_init(mp_lock_sh_t *l);

/*
 * Acquire before deadline_ns (mp_time.h; MP_TIME_FOREVER to wait).
 * Returns 0 (acquired), MP_LOCK_REPAIR (acquired; the previous holder died
 * inside its critical section: repair the protected data now),
 * -ETIMEDOUT, -EDEADLK (this thread already holds it),
 * -ENOTRECOVERABLE (the lock is permanently unusable), -EINVAL.
 */
int mp_lock_acquire(mp_lock_sh_t *l, int64_t deadline_ns);

/* Release a lock held by the calling thread. */
void mp_lock_release(mp_lock_sh_t *l);

/* Destroy (creator, with no other user left). */
void mp_lock_destroy(mp_lock_sh_t *l);

#endif
