/*
 * mp_srv — the server side of a channel: one epoll over the listening
 * socket, the direct client connections, the manager link, the timers and
 * a wake eventfd; the queue of work not yet handed to the program; the
 * receive indices awaiting a reply.
 *
 * Everything that arrives is first decoded into the channel's queue (one
 * FIFO: synchronous requests, buffered messages, events); receive hands
 * out the queue's head, timers first.  Once the program has asked for
 * messip_channel_fd, the wake eventfd is readable exactly while the queue
 * (or a timer) holds something, so that fd is readable whenever receive
 * would not block; before that it is never touched (receive looks at the
 * queue before it sleeps), so no message costs an eventfd write and read.
 * Before sleeping, receive busy-polls the epoll briefly when that pays
 * (mp_spin, mp_sock.h).  A large request that was all a client link's
 * input buffer held becomes its item without a copy (the buffer is taken
 * over).
 *
 * Buffered messages are acknowledged to the manager (BACK, cumulative)
 * as soon as they are handed to the program (retried before receive
 * sleeps if the link could not take it at once).  Records the manager re-sends
 * after a resume are recognised by their sequence number and dropped.
 *
 * Direct connections prove the channel ticket (c->ticket) before
 * anything else (doc/protocol.md, "Direct link authentication"): the
 * server sends CHALLENGE on accept and takes only AUTH until the proof
 * verified (frames over 64 data bytes are refused on their header); a
 * wrong, missing or replayed proof is answered AUTH EACCES and the
 * connection closed (MESSIP-PEER-AUTH, rate-limited).  The one exception
 * is a same-host client's HELLO that names the segment (mp_local): such
 * a link may then only say BYE.
 */
#ifndef MP_SRV_H
#define MP_SRV_H

#include <stdint.h>
#include <sys/uio.h>

#include "mp_iov.h"
#include "mp_priv.h"
#include "mp_wire.h"

/* Set up the server state around the listening socket lfd (adopted). */
int mp_srv_open(struct messip_channel_priv *c, int lfd, int32_t maxbuf);

/* Close every descriptor and free every queued item and index. */
void mp_srv_close(struct messip_channel_priv *c);

/* Watch the manager link's fd (or stop: fd -1) with epoll events. */
void mp_srv_watch_mgr(struct messip_channel_priv *c, int fd, uint32_t events);

/* Queue what the manager pushed (BDELIVER / EVENT).  0 or -ENOMEM. */
int mp_srv_push_buffered(struct messip_channel_priv *c,
			 const struct mp_wire_msg *m);
int mp_srv_push_event(struct messip_channel_priv *c,
		      const struct mp_wire_msg *m);

/* The manager link came back: re-acknowledge (resumed), or start the
 * sequence numbers afresh (a new channel after a re-registration). */
void mp_srv_link_restored(struct messip_channel_priv *c, bool new_channel);

/* Re-evaluate the wake eventfd (after timers or the queue changed). */
void mp_srv_update_wake(struct messip_channel_priv *c);

/*
 * See messip_receive.  0 with *result = an index >= 0 or a MESSIP_MSG_*
 * code (kept out of the return value: MESSIP_MSG_DISCONNECT == -2 would
 * read as -ENOENT); or -ETIMEDOUT, -ENOMEM, -ESHUTDOWN (once, when the
 * manager link is declared dead), -errno from epoll.  polled: the caller
 * has just called mp_srv_poll and it found nothing (the first look is
 * then skipped).
 */
int mp_srv_receive(struct messip_channel_priv *c, int32_t *type,
		   const struct mp_iov_sink *sink, int64_t deadline,
		   bool polled, int *result);

/*
 * Hand a request of another path (same host, in process) to the program
 * at the lowest free receive index: receive_allmsg[index] = data, the
 * len bytes copied into sink unless view, *type = msgtype, the result set
 * (remote_id from id: at most MESSIP_MAXLEN_ID bytes, fewer when
 * NUL-terminated; datalen, datalenr).  The caller then records what the
 * index holds (slots[index].local or .inproc) before the next receive.
 * The index (>= 0), or -ENOMEM / the sink's error (nothing changed: hand
 * it out again later).
 */
int mp_srv_index_give(struct messip_channel_priv *c, const void *data,
		      uint32_t len, int32_t msgtype, const char *id,
		      const struct mp_iov_sink *sink, bool view, int32_t *type);

/* One look without waiting (no clock read): as mp_srv_receive, or
 * INT_MIN when there is nothing to hand out yet. */
int mp_srv_poll(struct messip_channel_priv *c, int32_t *type,
		const struct mp_iov_sink *sink, int *result);

/* See messip_reply: 0, -EINVAL, -ESRCH, -ETIMEDOUT. */
int mp_srv_reply(struct messip_channel_priv *c, int index, int32_t answer,
		 const struct iovec *iov, int iovcnt, int64_t deadline);

#endif
