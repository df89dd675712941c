/*
 * mp_timer — timers on a server channel (see mp_timer.h).
 *
 * Invariants: every timer of a channel is on its list and its timerfd is
 * in the channel's epoll; a timer_t from the program is looked up in that
 * list before anything touches it.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "messip.h"
#include "mp_alloc.h"
#include "mp_chan.h"
#include "mp_export.h"
#include "mp_srv.h"
#include "mp_timer.h"

/* Expiries a timer may bank before receive collects them: a program that
 * stopped receiving for a long time gets a bounded burst, not millions. */
#define MP_TIMER_PENDING_MAX 1000

static void ms_to_ts(int ms, struct timespec *ts)
{
	ts->tv_sec = ms / 1000;
	ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

void mp_timer_ready(struct mp_timer *t)
{
	uint64_t n = 0;

	if (read(t->fd, &n, sizeof(n)) != sizeof(n))
		return; /* spurious: nothing expired */
	t->pending += n;
	if (t->pending > MP_TIMER_PENDING_MAX)
		t->pending = MP_TIMER_PENDING_MAX;
}

bool mp_timer_take(struct messip_channel_priv *c, int32_t *type)
{
	struct mp_timer **pp;

	for (pp = &c->srv.timers; *pp; pp = &(*pp)->next) {
		struct mp_timer *t = *pp;

		if (!t->pending)
			continue;
		t->pending--;
		*type = t->type;
		/* Move it to the tail so that timers take turns. */
		if (t->next) {
			struct mp_timer **tail = pp;

			*pp = t->next;
			while (*tail)
				tail = &(*tail)->next;
			*tail = t;
			t->next = NULL;
		}
		return true;
	}
	return false;
}

bool mp_timer_pending(const struct messip_channel_priv *c)
{
	for (const struct mp_timer *t = c->srv.timers; t; t = t->next)
		if (t->pending)
			return true;
	return false;
}

static void timer_free(struct messip_channel_priv *c, struct mp_timer *t)
{
	if (c->srv.epfd >= 0)
		epoll_ctl(c->srv.epfd, EPOLL_CTL_DEL, t->fd, NULL);
	close(t->fd);
	free(t);
}

void mp_timer_free_all(struct messip_channel_priv *c)
{
	while (c->srv.timers) {
		struct mp_timer *t = c->srv.timers;

		c->srv.timers = t->next;
		timer_free(c, t);
	}
}

static int timer_create_in(struct messip_channel_priv *c, int32_t type,
			   int first_ms, int rep_ms, struct mp_timer **out)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct itimerspec its;
	struct mp_timer *t;
	int rc;

	t = mp_calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->src.kind = MP_SRC_TIMER;
	t->type = type;
	t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->fd < 0) {
		rc = -errno;
		free(t);
		return rc;
	}
	memset(&its, 0, sizeof(its));
	ms_to_ts(first_ms, &its.it_value);
	if (first_ms == 0)
		its.it_value.tv_nsec = 1; /* 0 would disarm: fire at once */
	ms_to_ts(rep_ms, &its.it_interval);
	ev.data.ptr = &t->src;
	if (timerfd_settime(t->fd, 0, &its, NULL) < 0 ||
	    epoll_ctl(c->srv.epfd, EPOLL_CTL_ADD, t->fd, &ev) < 0) {
		rc = -errno;
		close(t->fd);
		free(t);
		return rc;
	}
	t->next = c->srv.timers;
	c->srv.timers = t;
	*out = t;
	return 0;
}

MESSIP_EXPORT timer_t messip_timer_create(messip_channel_t *ch, int32_t type,
					  int msec_1st_shot, int msec_rep_shot,
					  int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_timer *t = NULL;
	int rc;

	(void)msec_timeout; /* arming a timer never waits */
	if (!c || !c->server || msec_1st_shot < 0 || msec_rep_shot < 0)
		return (timer_t)mp_fail_ptr(-EINVAL);
	rc = timer_create_in(c, type, msec_1st_shot, msec_rep_shot, &t);
	if (rc < 0)
		return (timer_t)mp_fail_ptr(rc);
	return (timer_t)t;
}

MESSIP_EXPORT int messip_timer_delete(messip_channel_t *ch, timer_t timer_id)
{
	struct messip_channel_priv *c = mp_chan_get(ch);

	if (!c || !c->server)
		return mp_fail(-EINVAL);
	for (struct mp_timer **pp = &c->srv.timers; *pp; pp = &(*pp)->next) {
		struct mp_timer *t = *pp;

		if ((timer_t)t != timer_id)
			continue;
		*pp = t->next;
		timer_free(c, t);
		mp_srv_update_wake(c);
		return 0;
	}
	return mp_fail(-EINVAL);
}
