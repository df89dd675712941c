/*
 * mp_cli — the client side of a channel: the direct link to the server,
 * synchronous requests and pings over it, and buffered sends through the
 * manager.
 *
 * Requests carry a reqid; the client waits for the REPLY with that reqid
 * and drops any other (a late reply to a request that timed out).  A
 * timeout sends CANCEL so the server can drop the request.  While it
 * waits, the client also services its manager link (events for its own
 * server channels, resume), so a process that only ever sends keeps its
 * registration alive across a manager worker restart.
 *
 * Waiting for a reply: a short adaptive busy-poll first (mp_spin,
 * mp_sock.h), then a read that blocks (the link's reads may wait, up to
 * 100 ms each, mp_sock_blocking_reads(); the manager link is looked at
 * between them) or, near a deadline, poll.  A large reply into a plain
 * buffer is read straight into it (mp_link_fill_direct).
 *
 * The server is gone when its link closes: every call then fails with
 * ESRCH.  TCP keepalive and TCP_USER_TIMEOUT (mp_sock) bound how long a
 * vanished host can go unnoticed (under 10 s).
 */
#ifndef MP_CLI_H
#define MP_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mp_priv.h"

/*
 * The link is opened lazily: channel_connect only asks the manager
 * (CH_CONNECT), so a look-up costs one manager round trip and the server
 * sees nothing until the client first sends or pings.  A server that is
 * gone by then is reported by that first call (ESRCH), as it would have
 * been had the link been opened at connect time and closed since.  The
 * TCP connect itself survives a call that times out: the next call goes
 * on with it, so even calls with short timeouts get the link up.
 */

/* Forget any link; the next mp_cli_link() opens one to c->addr. */
void mp_cli_defer(struct messip_channel_priv *c);

/* Make sure the link is up (opening it, proving the channel ticket and
 * sending HELLO, if it was deferred): 0, -ESRCH (server gone or
 * unreachable), -EACCES (the server refused our ticket, or could not
 * prove it holds it), -EPROTO, -ENOMEM, -ETIMEDOUT (the connect or the exchange
 * is still in progress; try again). */
int mp_cli_link(struct messip_channel_priv *c, int64_t deadline);

/* Could the handle still reach its server?  false once its link closed
 * (a deferred link counts as reachable: the first call will tell). */
bool mp_cli_usable(struct messip_channel_priv *c);

/* Open the link to the server at sa and send HELLO now (its WELCOME is
 * checked by the first request that waits): as mp_cli_link. */
int mp_cli_open(struct messip_channel_priv *c, const struct sockaddr *sa,
		socklen_t salen, int64_t deadline);

/*
 * Asynchronous requests (mp_async.c) over the link.
 *
 * mp_cli_post: open the link if needed and send a SEND frame (type, the
 * vector of total bytes) with a fresh *reqid, without waiting for the
 * reply; with gather, the frame is only queued on the link (up to 64 KiB
 * of them) and the next wait writes it.  0, -ETIMEDOUT (nothing sent),
 * -ESRCH (server gone).
 *
 * mp_cli_wait_reply: wait for the REPLY to reqid (other requests' replies
 * are filed meanwhile, mp_async_stash).  0 with m filled (its data valid
 * until the next read of the link), -ETIMEDOUT, -ESRCH, -EPROTO.
 *
 * mp_cli_drain: read what the link holds now, without waiting, and file
 * every reply.  0, -ESRCH (the link closed), -EPROTO.
 *
 * mp_cli_cancel: tell the server the request reqid is withdrawn (no
 * answer; its reply, if one comes, is dropped by reqid).
 */
int mp_cli_post(struct messip_channel_priv *c, int32_t type,
		const struct iovec *iov, int iovcnt, uint32_t total,
		int64_t deadline, bool gather, uint32_t *reqid);
int mp_cli_wait_reply(struct messip_channel_priv *c, uint32_t reqid,
		      struct mp_wire_msg *m, int64_t deadline);
int mp_cli_drain(struct messip_channel_priv *c);
void mp_cli_cancel(struct messip_channel_priv *c, uint32_t reqid);

/* Say BYE (without waiting) and close the link. */
void mp_cli_close(struct messip_channel_priv *c);

#endif
