/*
 * mp_mgrloop — a manager worker played in-process: a real manager segment
 * (mgr_state), one worker's state, and connections whose far end is a
 * socketpair the caller holds, driven through the worker's own steps
 * (mgr_worker_adopt / mgr_worker_serve / mgr_worker_end_pass).  No
 * listening socket, no fork, no epoll_wait: the caller decides when bytes
 * arrive and when the worker looks, so a run is repeatable.  Used by the
 * manager fuzz target (tests/fuzz_mgr.c) and the allocation-failure tests
 * (tests/test_alloc.c).
 *
 * Invariants: every connection the caller opened is either in the
 * worker's list (mp_mgrloop_alive) or closed by the worker, which then
 * closed its own end; the caller closes its peer fd in both cases.
 * mp_mgrloop_stop leaves no /dev/shm object and no descriptor behind.
 */
#ifndef MP_MGRLOOP_H
#define MP_MGRLOOP_H

#include <stddef.h>
#include <stdint.h>

#include "mgr_config.h"
#include "mgr_state.h"
#include "mgr_worker.h"

#define MP_MGRLOOP_POOL 8

/* A socketpair kept for reuse: the worker gets a dup of wfd, so the pair
 * outlives the connection and a new one costs no socket(2). */
struct mp_mgrloop_pair {
	int wfd, pfd;   /* worker side (original), peer side; -1: none */
	int busy;       /* handed out */
	int burned;     /* shut down or hung up: not reusable */
	int next_fd;    /* lowest descriptor number for its next dup (the
			   ones below may still be in the worker's epoll
			   set, see mp_mgrloop_connect) */
	int unread;     /* bytes the peer wrote that the worker has not
			   read, -1: not known (only the peer writes and
			   only the worker reads, so counting is exact and
			   saves an ioctl per feed and a recv per release) */
};

struct mp_mgrloop {
	struct mgr_config cfg;
	struct mgr_state st;
	struct mgr_worker w;
	int efd;
	char name[96];
	void *snap;             /* the segment as created, up to the rings */
	size_t snap_len;
	struct mgr_worker w0;   /* the worker state as started */
	struct mp_mgrloop_pair pool[MP_MGRLOOP_POOL];
};

/*
 * Create the segment `name` for a small manager (8 channels, rings of a
 * few records, 4 KiB messages, 1 worker) and the worker state, as worker
 * 0 of it.  Logging is cut to errors.  0 or -errno (nothing left over).
 */
int mp_mgrloop_start(struct mp_mgrloop *h, const char *name);

/* Close every connection (as unclean ends), free the worker state, unmap
 * and unlink the segment. */
void mp_mgrloop_stop(struct mp_mgrloop *h);

/*
 * Back to the state mp_mgrloop_start left, without creating a segment:
 * close every connection, copy the segment's tables back from the
 * snapshot taken at start (rings are formatted when a channel is created,
 * so they need none), and forget the worker's local caches.  Every fd
 * the caller got must have been released first.  Much cheaper than
 * stop + start; the fuzz target does it between inputs.
 */
void mp_mgrloop_reset(struct mp_mgrloop *h);

/*
 * A new connection to the worker.  Returns the caller's end (non-blocking
 * socket) and sets *c to the worker's connection, or -errno (-ENOMEM when
 * the worker could not take it).
 */
int mp_mgrloop_connect(struct mp_mgrloop *h, struct mgr_conn **c);

/*
 * The caller is done with fd (from mp_mgrloop_connect).  If the worker
 * still holds the connection it sees nothing (the pair lives on in the
 * pool): hang up first (mp_mgrloop_hangup) to end it.
 */
void mp_mgrloop_release(struct mp_mgrloop *h, int fd);

/* The peer closes fd at once and fd is released; if c (its connection)
 * is still alive, the worker looks at it and sees the hang-up.  Returns 1
 * if c survived that (a bug: the worker must close it). */
int mp_mgrloop_hangup(struct mp_mgrloop *h, int fd, struct mgr_conn *c);

/* 1 while c is still one of the worker's connections. */
int mp_mgrloop_alive(struct mp_mgrloop *h, const struct mgr_conn *c);

/*
 * Bytes arrive on c: write data (len may be 0) to its far end `fd`, let
 * the worker read and handle them (as many epoll rounds as it takes to
 * read what it will), then end the pass.  eof: then close the far end's
 * writing side as well.  Returns 1 while c is alive, 0 once the worker
 * closed it.
 */
int mp_mgrloop_feed(struct mp_mgrloop *h, struct mgr_conn *c, int fd,
		    const void *data, size_t len, int eof);

/* The worker looks at c (bytes the caller wrote to its far end itself)
 * and ends the pass; nothing is drained.  1 while c is alive. */
int mp_mgrloop_serve(struct mp_mgrloop *h, struct mgr_conn *c);

/* One more pass without input (hints, flush; with tick_too, timers). */
void mp_mgrloop_pass(struct mp_mgrloop *h, int tick_too);

/* Read what the worker wrote to fd, up to cap bytes into buf (buf NULL:
 * discard everything available).  Returns the bytes read (0: none now,
 * or the worker closed it). */
size_t mp_mgrloop_drain(int fd, void *buf, size_t cap);

/* Set: mp_mgrloop_drain prints the frames it reads (debugging aid). */
extern int mp_mgrloop_trace;

#endif
