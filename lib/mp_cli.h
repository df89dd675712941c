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
 * The server is gone when its link closes: every call then fails with
 * ESRCH.  TCP keepalive and TCP_USER_TIMEOUT (mp_sock) bound how long a
 * vanished host can go unnoticed (under 10 s).
 */
#ifndef MP_CLI_H
#define MP_CLI_H

#include <sys/socket.h>

#include "mp_priv.h"

/* Open the link to the server at sa and send HELLO (its WELCOME is
 * checked by the first request that waits): 0, -ESRCH (cannot reach
 * it), -ETIMEDOUT. */
int mp_cli_open(struct messip_channel_priv *c, const struct sockaddr *sa,
		socklen_t salen, int64_t deadline);

/* Say BYE (without waiting) and close the link. */
void mp_cli_close(struct messip_channel_priv *c);

#endif
