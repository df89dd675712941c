/*
 * mp_inproc — the in-process path of libmessip: a client and a server
 * channel that are threads of one process exchange messages through a
 * mailbox in memory, with no socket, no shared-memory segment and, with
 * the zero-copy calls, no copy of the payload.
 *
 * Which path: the manager still owns every name (create, connect,
 * disconnect and delete go to it as on the other paths, and it reports
 * MESSIP_MSG_DISCONNECT as usual).  A server channel also enters a
 * process-wide registry, keyed by its listening address (a port this
 * process holds, so no other process can have the same key) and its name.
 * A client that finds the address the manager gave it in the registry,
 * entered by this very process (not a parent before fork), uses the
 * mailbox; otherwise the other paths apply.  MESSIP_NO_INPROC set to
 * anything but "0" turns the path off (for comparisons).
 *
 * The mailbox (struct mp_inproc_box): one FIFO per server channel, a
 * linked list of entries -- synchronous requests, pings, buffered messages
 * and events -- under one mutex, bounded only for buffered messages (by
 * the channel's maxnb_msg_buffered; a sender waits for room, nothing is
 * dropped).  Each synchronous request is an object of its own (struct
 * mp_inproc_req: state, reply slot, waiter), shared by reference between
 * the client and the server, so that a request can outlive the call that
 * posted it (timeouts, and asynchronous requests: mp_inproc_post posts
 * one and returns it).
 *
 * Request states (the word the client sleeps on, a futex):
 *     QUEUED -> TAKEN -> REPLYING -> DONE
 *        \         \
 *         CANCELED  CANCELED (the client withdrew it; a reply is dropped)
 * QUEUED -> TAKEN and the withdrawal of a QUEUED request happen under the
 * mailbox lock; from TAKEN on, the server (reply) and the client (cancel)
 * race with one compare-and-swap each, so exactly one outcome wins: the
 * reply (the client then waits out REPLYING, which is only a copy) or the
 * withdrawal.  A request withdrawn after the server took it is queued
 * once more as a note (the request itself: it is on no queue then), from
 * which a server that opted in reports MESSIP_MSG_CANCELED for its index
 * if it still holds it.
 *
 * Asynchronous requests: the same objects, posted without a sink (the
 * reply is kept in the request until it is collected) and watched by the
 * posting thread.  A return-to-sender reply pokes the reply_to channel's
 * mailbox (its receive counts the poke as work, so it is woken, not
 * polled).
 *
 * Waking: the server's receive waits in its epoll as on the TCP path (or
 * on the segment's doorbell, whose helper watches that epoll); the mailbox
 * has an eventfd in that epoll, written only when the server said it is
 * about to sleep (armed), after a short bounded spin on the mailbox
 * (mp_spin).  The client spins briefly on its request's state, then
 * sleeps on it (futex).  Once messip_channel_fd was asked for, the
 * eventfd is kept readable while the mailbox holds something.
 *
 * Threads: a server thread that exits with requests it took and did not
 * reply to fails them (the clients get ESRCH, as when a server dies); a
 * client thread that exits with asynchronous requests outstanding
 * withdraws them (a reply to one fails with ESRCH) and its servers get
 * MESSIP_MSG_DISMISSED for it, as when a client dies.  Both are found
 * with a pthread key whose destructor runs at thread exit.
 *
 * Invariants:
 *   - an entry is in exactly one place: the mailbox queue, a receive index
 *     of the server (struct mp_slot.inproc), or in the hands of a client
 *     call or asynchronous request (a withdrawal note is both in the
 *     queue and at its index); a request is freed when its last
 *     reference (client, queue, server) is dropped;
 *   - a receive index holds a TCP item, a same-host request or an
 *     in-process request, never two;
 *   - once the box is dead (server channel closed) nothing is queued in it
 *     and every request it held got ESRCH.
 */
#ifndef MP_INPROC_H
#define MP_INPROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mp_iov.h"
#include "mp_priv.h"

/* "Nothing to hand out" from mp_inproc_take (the value of mp_srv's). */
#define MP_INPROC_NOTHING INT32_MIN

/* ---- both sides ---------------------------------------------------- */

/* Release c's in-process state: a server's mailbox (its clients get
 * ESRCH) or a client's loans and reply view.  Call before the channel's
 * descriptors are closed.  Safe when there is none. */
void mp_inproc_close(struct messip_channel_priv *c);

/* ---- server side --------------------------------------------------- */

/* Give server channel c a mailbox and enter it in the registry (c->addr
 * must hold the listening address, without the same-host suffix).  0 or
 * -errno: the channel then simply has no in-process path. */
int mp_inproc_srv_open(struct messip_channel_priv *c, int32_t maxbuf);

/*
 * Hand out the next mailbox entry: 0 with *result (an index, or
 * MESSIP_MSG_NOREPLY / MESSIP_MSG_DISMISSED), MP_INPROC_NOTHING, or
 * -ENOMEM (nothing lost: the entry is handed out by the next call).  With
 * view, a request is not copied into sink (receive_allmsg[index] is the
 * view).  Pings are answered inside.
 */
int mp_inproc_take(struct messip_channel_priv *c, int32_t *type,
		   const struct mp_iov_sink *sink, bool view, int *result);

/* Should the mailbox go before the other sources this turn?  (They take
 * turns; events go behind the mailbox, see mp_srv.c.) */
bool mp_inproc_turn(struct messip_channel_priv *c);

/*
 * The receive loop found nothing and is about to sleep until `until`:
 * spin on the mailbox a little, then arm its eventfd.  true: something
 * arrived (take again); false: armed, sleep in the epoll.
 */
bool mp_inproc_idle(struct messip_channel_priv *c, int64_t until);

/* messip_channel_fd was called: keep the eventfd readable while the
 * mailbox holds something. */
void mp_inproc_fd_mode(struct messip_channel_priv *c);

/* Reply to an in-process index (slots[index].inproc set): 0, also when
 * the client withdrew the request or the thread that took it exited (the
 * reply is dropped); -ESRCH when the client thread that posted it ended
 * (dropped too).  The index is free either way.  A copy that fails
 * (dynamic mode: no memory) fails the client's call with ENOMEM. */
int mp_inproc_reply(struct messip_channel_priv *c, int index, int32_t answer,
		    const struct iovec *iov, int iovcnt, uint32_t total);

/* messip_reply_loan for an in-process index: a buffer owned by the
 * request, handed to the client by the reply without a copy. */
void *mp_inproc_reply_loan(struct messip_channel_priv *c, int index,
			   size_t len);

/* ---- client side --------------------------------------------------- */

/* After CH_INFO (c->addr set, without the suffix): use the mailbox if the
 * server is a channel of this process. */
void mp_inproc_cli_prepare(struct messip_channel_priv *c);

/* Is c a client on the in-process path?  (Then the calls below apply.) */
bool mp_inproc_cli_active(const struct messip_channel_priv *c);

/* The synchronous round trip: as messip_send, internal errors. */
int mp_inproc_send(struct messip_channel_priv *c, int32_t type,
		   const struct iovec *iov, int iovcnt, uint32_t total,
		   int32_t *answer, const struct mp_iov_sink *sink,
		   int64_t deadline);

/* Ping (answered inside the server's receive): 0, -ETIMEDOUT, -ESRCH. */
int mp_inproc_ping(struct messip_channel_priv *c, int64_t deadline);

/* Buffered message into the mailbox, waiting for room up to msec_timeout:
 * the count queued before it, -ETIMEDOUT, -ESRCH, -ENOMEM. */
int mp_inproc_bsend(struct messip_channel_priv *c, int32_t type,
		    const void *data, uint32_t len, int msec_timeout);

/* messip_buffer_loan: a buffer inside a request object (NULL and errno:
 * EAGAIN, ENOMEM, ESRCH). */
void *mp_inproc_loan(struct messip_channel_priv *c, size_t len);

/* messip_buffer_release: 0, -EINVAL (not a loan or view of c). */
int mp_inproc_release(struct messip_channel_priv *c, const void *buf);

/*
 * messip_send_loaned / messip_send_view: post the loan buf (len bytes)
 * without a copy.  The reply goes to sink, or with view != NULL stays in
 * the request (*view, *vlen) until released or the next call.  -EINVAL
 * (not a loan: kept), -EMSGSIZE (over the loan: kept), else as
 * mp_inproc_send (the loan ends).
 */
int mp_inproc_send_loaned(struct messip_channel_priv *c, int32_t type,
			  void *buf, int len, int32_t *answer,
			  const struct mp_iov_sink *sink, const void **view,
			  int *vlen, int64_t deadline);

/* ---- asynchronous requests (mp_async.c) ---------------------------- */

/* Can a reply wake a receive on server channel rt (return to sender)?
 * Then mp_inproc_post with rt as reply_to pokes it; otherwise its
 * receive must look now and then. */
bool mp_inproc_notifies(const struct messip_channel_priv *rt);

/*
 * messip_send_async on the in-process path: post the request (copied
 * once) and return at once: 0 with *out, the request (the caller's
 * reference; its reply is kept in it), or -ESRCH (the server is gone),
 * -ENOMEM.  reply_to: a server channel of this process to wake when the
 * reply is in (mp_inproc_notifies), or NULL.  The calling thread watches
 * the request until it is dropped: if it ends first, the request is
 * withdrawn and its server receives MESSIP_MSG_DISMISSED for the client.
 */
int mp_inproc_post(struct messip_channel_priv *c, int32_t type,
		   const struct iovec *iov, int iovcnt, uint32_t total,
		   struct messip_channel_priv *reply_to,
		   struct mp_inproc_req **out);

/*
 * Wait for r's outcome until deadline (0: only look): 0 with *answer,
 * *data and *len (valid until r is dropped), -ETIMEDOUT (still
 * outstanding), -ESRCH (the server is gone, or the thread that posted r
 * ended and withdrew it), -ENOMEM (the server's copy failed).
 */
int mp_inproc_req_wait(struct messip_channel_priv *c, struct mp_inproc_req *r,
		       int64_t deadline, int32_t *answer, const void **data,
		       uint32_t *len);

/* Withdraw r: 0 (withdrawn: drop it; a server that took it and opted in
 * reports MESSIP_MSG_CANCELED, its reply is dropped), or 1 (its outcome
 * is there: mp_inproc_req_wait returns it at once).  Never sleeps. */
int mp_inproc_req_cancel(struct mp_inproc_req *r);

/* The caller is done with r: withdrawn first if it is still outstanding
 * (a handle that goes), then released. */
void mp_inproc_req_drop(struct mp_inproc_req *r);

#endif
