/*
 * mp_cnx — the connection to the manager: registration, requests and
 * their answers, dispatch of what the manager pushes, and resume.
 *
 * One connection = one TCP link to the manager and one registration.
 * Requests (CH_CREATE, BSEND, ...) are answered in order with the request's
 * reqid; an answer whose reqid nobody waits for any more (the caller timed
 * out) is dropped.  Frames the manager pushes (BDELIVER, EVENT) are queued
 * on the server channel they name, whoever happens to be reading.
 *
 * Resume: when the link breaks, the connection goes DOWN and reconnects
 * with its resume token, by itself, from whatever library call next looks
 * at it (a server's receive, a client's send wait, any manager request),
 * without blocking any of them past its deadline: the reconnect is a
 * non-blocking state machine (DOWN -> CONNECTING -> HELLO -> UP) driven by
 * mp_cnx_pump().  Attempts back off from 50 ms to 1 s.  After
 * MP_RESUME_GRACE_MS without success the connection is DEAD and requests
 * fail with -ESHUTDOWN.  A resume the manager no longer knows (ESTALE:
 * the registration ended meanwhile) takes a new registration and declares
 * the connection's channels again.
 */
#ifndef MP_CNX_H
#define MP_CNX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mp_priv.h"
#include "mp_wire.h"

/* The handle if valid, else NULL. */
struct messip_cnx *mp_cnx_get(messip_cnx_t *cnx);

/* A fresh request id (never 0). */
uint32_t mp_cnx_reqid(struct messip_cnx *cnx);

/*
 * Send req (with data iov) and wait for its answer into *ans (ans->data
 * is NULL, except for a CH_INFO that carries a channel ticket: it is
 * copied into the connection and ans->data points at that copy, valid
 * until the next request).  The write may take until
 * deadline + slack_ns and so may the answer: slack is for requests whose
 * deadline the manager enforces itself (BSEND, CH_CONNECT LOCATE), whose
 * answer must be awaited to know what happened.  0, -ETIMEDOUT,
 * -ESHUTDOWN, -ENOMEM.  Resumes and re-sends if the link breaks.
 */
int mp_cnx_rpc(struct messip_cnx *cnx, struct mp_wire_msg *req,
	       const struct iovec *iov, int iovcnt, struct mp_wire_msg *ans,
	       int64_t deadline, int64_t slack_ns);

/* Send a frame that has no answer (BACK), without waiting: 0, -EAGAIN
 * (not up, socket full or broken; try again later).  Never closes the
 * link, so it may be called while frames are being dispatched. */
int mp_cnx_post(struct messip_cnx *cnx, const struct mp_wire_msg *m);

/* Wait until the link is up: 0, -ETIMEDOUT, -ESHUTDOWN. */
int mp_cnx_wait_up(struct messip_cnx *cnx, int64_t deadline);

/*
 * Make progress without blocking: read and dispatch what the manager
 * sent, or advance a resume.  Called when the link's fd is ready or at
 * mp_cnx_wake_time().
 */
void mp_cnx_pump(struct messip_cnx *cnx);

/* When mp_cnx_pump() must run even if the fd stays quiet (resume timers);
 * MP_TIME_FOREVER when never. */
int64_t mp_cnx_wake_time(const struct messip_cnx *cnx);

/* The link's fd (-1 while there is none) and the poll events to watch. */
int mp_cnx_fd(const struct messip_cnx *cnx);
short mp_cnx_poll_events(const struct messip_cnx *cnx);

/*
 * Pipelined buffered sends (doc/protocol.md, "Buffered messages").
 * mp_cnx_can_pipe: a message of len bytes may be sent without waiting
 * (link up, the manager's limit known from an earlier BSEND answer).
 * mp_cnx_bsend: queue it as a pipelined BSEND; returns the number of
 * messages queued before it as far as the library knows (>= 0),
 * -ETIMEDOUT (out of credit and no answer renewed it in time: not
 * sent), -EAGAIN (nothing unanswered and no credit, or pipelining
 * stopped meanwhile: use mp_cnx_pipe_drain then mp_cnx_rpc),
 * -ESHUTDOWN, -ENOMEM.  mp_cnx_bsend_answered: note what the answer to a
 * BSEND sent by mp_cnx_rpc says.  mp_cnx_flush: write the coalesced
 * frames now (0, -EAGAIN: the socket is full).
 */
bool mp_cnx_can_pipe(const struct messip_cnx *cnx, uint32_t len);
int mp_cnx_bsend(struct messip_cnx *cnx, int32_t handle, int32_t type,
		 const void *data, uint32_t len, int64_t deadline);
void mp_cnx_bsend_answered(struct messip_cnx *cnx,
			   const struct mp_wire_msg *ans);
int mp_cnx_flush(struct messip_cnx *cnx);

/* Wait until every pipelined BSEND is answered (before a waiting BSEND,
 * which must not queue behind them): 0, -ETIMEDOUT, -ESHUTDOWN. */
int mp_cnx_pipe_drain(struct messip_cnx *cnx, int64_t deadline);

/* Milliseconds left until deadline for a wire "wait" field: -1 forever. */
int32_t mp_cnx_wait_field(int64_t deadline);

/* Link a channel into / out of the connection's list. */
void mp_cnx_add_chan(struct messip_cnx *cnx, struct messip_channel_priv *c);
void mp_cnx_remove_chan(struct messip_cnx *cnx, struct messip_channel_priv *c);

#endif
