/*
 * mp_async — asynchronous requests: messip_send_async and friends,
 * request handles, cancellation, and "return to sender" (a reply
 * delivered as MESSIP_MSG_REPLY on one of the client's own channels).
 *
 * A request belongs to the client handle it was posted on and sits on
 * that handle's list (struct mp_cli reqs, posting order) until it is
 * collected, withdrawn, or the handle goes.  On TCP it is a SEND frame
 * with its own reqid on the handle's direct link: many are outstanding at
 * once, the server answers them in any order, and every wait on the link
 * (a synchronous send, a ping, another request's wait) files a REPLY that
 * is not its own into the request it belongs to (mp_async_stash).  On the
 * same-host path it holds a slot of the server's segment from posting to
 * collection (mp_local_post and friends).
 *
 * Return to sender: a request posted with a reply_to channel (a server
 * channel of the same connection) is counted on it (srv.r2s_pending);
 * messip_receive on reply_to collects the finished ones
 * (mp_async_harvest) into its ready queue and hands them out one per
 * receive as MESSIP_MSG_REPLY (mp_async_take).  The request last handed
 * out stays readable (messip_reply_request) until the next receive.
 *
 * Invariants:
 *   - a request is on exactly one list: its handle's (posted, not yet
 *     handed over), or its reply_to's ready queue, or its reply_to's
 *     "last" pointer; freeing unlinks it from the one it is on;
 *   - each request has exactly one outcome: collected (wait returned 0,
 *     or MESSIP_MSG_REPLY handed out), withdrawn (cancel returned 0), or
 *     failed (ESRCH: the server or its link went); the TCP server drops
 *     or flags a withdrawn request (CANCEL), the segment settles reply
 *     against cancel with one CAS;
 *   - everything runs in the thread that uses the connection (messip.h).
 */
#ifndef MP_ASYNC_H
#define MP_ASYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "mp_iov.h"
#include "mp_priv.h"
#include "mp_wire.h"

/* Receive hands out nothing from the ready queue (as mp_srv). */
#define MP_ASYNC_NOTHING INT32_MIN

/* A REPLY on c's link that its current wait does not want: store it in
 * the request it answers.  true if one took it (else it is a late reply
 * and is dropped). */
bool mp_async_stash(struct messip_channel_priv *c, const struct mp_wire_msg *m);

/* c's link is gone (or about to be replaced): its pending TCP requests
 * fail with ESRCH. */
void mp_async_link_lost(struct messip_channel_priv *c);

/* Has c requests that may still receive a REPLY on its link? */
bool mp_async_tcp_pending(const struct messip_channel_priv *c);

/* Before c is freed: withdraw and free its requests (client), or those
 * that would reply to it and those it holds (server). */
void mp_async_chan_gone(struct messip_channel_priv *c);

/* Server channel c: move finished return-to-sender requests to its ready
 * queue (reads the client links without waiting). */
void mp_async_harvest(struct messip_channel_priv *c);

/* Server channel c: a receive begins; the request its last receive
 * handed out (messip_reply_request) is freed. */
void mp_async_forget_last(struct messip_channel_priv *c);

/* Server channel c: hand out the next ready reply: 0 with *result =
 * MESSIP_MSG_REPLY, MP_ASYNC_NOTHING, or -errno (the sink failed: it
 * stays queued). */
int mp_async_take(struct messip_channel_priv *c, int32_t *type,
		  const struct mp_iov_sink *sink, int *result);

/* Receive on c is about to wait while return-to-sender requests are
 * out: the latest time to look for their replies again (their links and
 * slots are not among what receive sleeps on), or until if sooner. */
int64_t mp_async_wait_bound(struct messip_channel_priv *c, int64_t until);

#endif
