/*
 * mp_local — the same-host fast path of libmessip: a channel's shared
 * segment (shm/mp_chseg) wired into the library, and the zero-copy calls.
 *
 * Which path: a server channel creates its segment when it is created
 * (unless MESSIP_NO_SHM is set, or creation fails: then it is TCP only)
 * and advertises it by appending "/<pid>" to the address it gives the
 * manager.  The segment's name is derived from what both ends know:
 *
 *     /messip-ch-<host token, 16 hex>-<server pid>-<server port>-<name>
 *
 * (name: the channel name with every character other than [A-Za-z0-9._-]
 * replaced by '_'; pid and port together are unique among live servers of
 * one PID and network namespace).  A client decides at its first call
 * that needs the server (mp_local_cli_ready): if its host token equals
 * the server's, MESSIP_NO_SHM is not set and the segment opens, it uses
 * the segment, and opens its TCP link to the server first with a HELLO
 * whose u field carries its host token -- which is how the server counts
 * its same-host clients ("local peers").  Otherwise (permissions, another
 * PID namespace, any error) it stays on TCP, transparently.
 *
 * Server wait.  With no local peer the server sleeps in its epoll as on
 * the TCP path (the segment costs nothing).  With local peers it sleeps
 * on the segment's doorbell (mp_chseg_server_wait: spin, yield, futex),
 * and one helper thread per channel sleeps in the channel's epoll on its
 * behalf and rings the doorbell when a descriptor becomes readable ("the
 * watcher").  Once messip_channel_fd has been asked for, the roles are
 * reversed for good: the program sleeps in the epoll, and the helper
 * sleeps on the doorbell and makes an eventfd in that epoll readable
 * whenever it rings ("fd mode").  The helper touches only its own
 * descriptors, a few atomic words and mp_chseg_kick (thread-safe): never
 * the library's state, which stays single-threaded.
 *
 * Events.  DISCONNECT and DISMISSED come from the manager only, as on the
 * TCP path, so each is reported exactly once.  The segment's own
 * dead-client detection (pidfd; MP_CHSEG_GONE) is used inside the library
 * only: it frees the dead client's slots at once and makes a reply to its
 * held request fail with ESRCH, without waiting for the manager.
 *
 * Invariants:
 *   - a receive index (struct mp_slot) holds either a TCP item or a local
 *     request (slot.local -> held[chseg slot]), never both; held[i].index
 *     and slots[index].local point at each other while the request awaits
 *     its reply;
 *   - nothing read from the segment is trusted beyond what mp_chseg
 *     validated; a corrupt slot costs its own client EBADMSG and is logged
 *     (MESSIP-SHM-CORRUPT), the server goes on;
 *   - the segment is closed by the thread that created it when the channel
 *     is deleted (see messip.h); its name is unlinked at close, at exit(),
 *     by a client that finds its server dead, or by the first segment
 *     creation of any later process of this host, which removes the
 *     segments of dead servers it finds.
 */
#ifndef MP_LOCAL_H
#define MP_LOCAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "mp_iov.h"
#include "mp_priv.h"
#include "mp_wire.h"

/* "Nothing to hand out" from mp_local_take (the same value as mp_srv's). */
#define MP_LOCAL_NOTHING INT32_MIN

/* ---- both sides ---------------------------------------------------- */

/* Release everything of c's fast path (stops the helper thread, closes
 * the segment, frees loans).  Call before the channel's descriptors are
 * closed.  Safe when there is none. */
void mp_local_close(struct messip_channel_priv *c);

/* ---- server side --------------------------------------------------- */

/*
 * Create c's segment (c->addr must hold the listening address; "/<pid>"
 * is appended to it on success).  0 or -errno; on failure the channel is
 * simply TCP only and c->addr is unchanged.
 */
int mp_local_srv_open(struct messip_channel_priv *c, int32_t maxbuf);

/*
 * Hand out the next local request or buffered message: 0 with *result (an
 * index, or MESSIP_MSG_NOREPLY), MP_LOCAL_NOTHING, or -ENOMEM.  Requests
 * the program must not see (pings, withdrawals, dead clients) are dealt
 * with inside.  Returns MP_LOCAL_NOTHING as well when the watcher saw the
 * epoll ready, so that the receive loop looks there before local work
 * starves it.
 */
int mp_local_take(struct messip_channel_priv *c, int32_t *type,
		  const struct mp_iov_sink *sink, int *result);

/* Should the receive loop offer the local path the next turn?  (Alternates
 * with the TCP queue under load; see mp_srv.c.) */
bool mp_local_turn(struct messip_channel_priv *c);

/*
 * Where the receive loop sleeps: true -- on the doorbell, through
 * mp_local_wait (there are local peers); false -- in the epoll, as on the
 * TCP path (*until may be brought forward so that slots left by dead
 * clients are looked for).
 */
bool mp_local_owns_wait(struct messip_channel_priv *c, int64_t *until);

/*
 * The doorbell sleep, when mp_local_owns_wait said so: like
 * epoll_wait(epfd, evs, max, until) -- the number of events (>= 0) or -1
 * with errno -- but it sleeps on the doorbell and returns 0 when local
 * work may be there.
 */
int mp_local_wait(struct messip_channel_priv *c, struct epoll_event *evs,
		  int max, int64_t until);

/* A direct client said HELLO: true when it is a same-host client using
 * the segment (counted until mp_local_peer_gone). */
bool mp_local_peer_hello(struct messip_channel_priv *c,
			 const struct mp_wire_msg *m);

/* A counted client's link closed: look for dead clients' slots now. */
void mp_local_peer_gone(struct messip_channel_priv *c);

/* An event (DISMISSED, ...) is next in the TCP queue: look for dead
 * clients' slots first. */
void mp_local_event_ahead(struct messip_channel_priv *c);

/* Is a messip_receive_view call under way on c?  (Requests are then not
 * copied, by any path.) */
bool mp_local_viewing(const struct messip_channel_priv *c);

/* messip_channel_fd was called: switch c to fd mode (see above). */
void mp_local_fd_mode(struct messip_channel_priv *c);

/* Reply to a local index (slots[index].local set): 0, -ESRCH, -EMSGSIZE. */
int mp_local_reply(struct messip_channel_priv *c, int index, int32_t answer,
		   const struct iovec *iov, int iovcnt, uint32_t total);

/* ---- client side --------------------------------------------------- */

/*
 * Cut the "/<pid>" suffix off a server address from CH_INFO (in place).
 * Returns the pid (> 0), or 0 when there is none.
 */
pid_t mp_local_split_addr(char *addr);

/*
 * After CH_INFO (c->addr set): note that the server at srv_pid may share
 * our host (token srv_host).  Nothing is opened yet: the first call that
 * needs the server decides (mp_local_cli_ready).  0 or -ENOMEM.
 */
int mp_local_cli_prepare(struct messip_channel_priv *c, pid_t srv_pid,
			 uint64_t srv_host);

/*
 * Before a client call: the first time, map the server's segment if it
 * shares our host and we may, and if so open the link with a HELLO that
 * says so (mp_cli_link, with msec_timeout).  0 (mp_local_cli_active now
 * tells the path), or -ETIMEDOUT (the link's connect is still in
 * progress: try again).
 */
int mp_local_cli_ready(struct messip_channel_priv *c, int msec_timeout);

/* Is c a client on the segment?  (Then the calls below apply.) */
bool mp_local_cli_active(const struct messip_channel_priv *c);

/* The u field of the client's HELLO: our host token when on the segment. */
uint64_t mp_local_hello_token(const struct messip_channel_priv *c);

/* Has the server of a client on the segment gone?  (For reconnects.) */
bool mp_local_cli_gone(struct messip_channel_priv *c);

/* The synchronous round trip: as messip_send, internal errors. */
int mp_local_send(struct messip_channel_priv *c, int32_t type,
		  const struct iovec *iov, int iovcnt, uint32_t total,
		  int32_t *answer, const struct mp_iov_sink *sink,
		  int64_t deadline);

/*
 * Asynchronous requests (mp_async.c): each holds a slot of the segment
 * from posting to collection.
 *
 * mp_local_post: claim a slot (waiting up to deadline for one), copy the
 * request in and publish it.  0 (r holds it), -ETIMEDOUT (no slot),
 * -ESRCH, -EMSGSIZE, -EBADMSG.
 *
 * mp_local_req_wait: wait for r's reply (deadline 0: one look).  0 (r
 * holds the reply: r->answer, r->rlen, r->rdata, until
 * mp_local_req_done), -ETIMEDOUT (still pending), -ESRCH (server gone),
 * -EBADMSG; on those two r is released.
 *
 * mp_local_req_cancel: withdraw r.  0 (withdrawn, released), 1 (too
 * late: r holds the reply, as after mp_local_req_wait), -EBADMSG.
 *
 * mp_local_req_done: release r after its reply was read.
 */
struct mp_chseg_req;
int mp_local_post(struct messip_channel_priv *c, int32_t type,
		  const struct iovec *iov, int iovcnt, uint32_t total,
		  struct mp_chseg_req *r, int64_t deadline);
int mp_local_req_wait(struct messip_channel_priv *c, struct mp_chseg_req *r,
		      int64_t deadline);
int mp_local_req_cancel(struct messip_channel_priv *c, struct mp_chseg_req *r);
void mp_local_req_done(struct messip_channel_priv *c, struct mp_chseg_req *r);

/* Ping through a slot: 0, -ETIMEDOUT, -ESRCH, -EBADMSG. */
int mp_local_ping(struct messip_channel_priv *c, int64_t deadline);

/* Buffered message into the segment's ring, waiting up to msec_timeout
 * (a timeout, not a deadline: while there is room no clock is read): an
 * upper bound of the count queued before it (mp_chseg_bsend), or
 * -ETIMEDOUT, -ESRCH, -EMSGSIZE, -EBADMSG. */
int mp_local_bsend(struct messip_channel_priv *c, int32_t type,
		   const void *data, uint32_t len, int msec_timeout);

#endif
