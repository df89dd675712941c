/*
 * mp_timer — timers on a server channel, one timerfd each, watched by the
 * channel's epoll: no signal, no thread.  Expiries read from a timerfd are
 * counted on the timer and handed out one by one by receive
 * (MESSIP_MSG_TIMER with the timer's type); deleting a timer forgets its
 * uncollected expiries with it.
 *
 * A timer_t handed to the program is the timer's address, but it is only
 * ever compared against the channel's own list, never dereferenced before
 * it has been found there: a stale or made-up timer_t gives EINVAL.
 */
#ifndef MP_TIMER_H
#define MP_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "mp_priv.h"

struct mp_timer {
	struct mp_src src; /* MP_SRC_TIMER */
	struct mp_timer *next;
	int fd;
	int32_t type;
	uint64_t pending; /* expiries read, not yet received */
};

/* The timerfd is readable: count its expiries. */
void mp_timer_ready(struct mp_timer *t);

/* Take one pending expiry of any timer of c: true with *type set. */
bool mp_timer_take(struct messip_channel_priv *c, int32_t *type);

/* Any expiry waiting to be received? */
bool mp_timer_pending(const struct messip_channel_priv *c);

/* Delete every timer of c (the channel is going away). */
void mp_timer_free_all(struct messip_channel_priv *c);

#endif
