/*
 * messip.h — message passing between processes and threads, on one host
 * or across a network.
 *
 * A server creates a named channel (messip_channel_create); clients find
 * it by name (messip_channel_connect) and send synchronous messages
 * (messip_send: the client blocks until the server replies) or buffered
 * ones (messip_buffered_send: held in a bounded queue, never dropped).
 * The server's messip_receive also delivers timer expiries and reports
 * clients that disconnect or die.  Messages are 0 to 64 KiB.
 *
 * Source compatible with the classic MESSIP 0.9 API.  Every call returns
 * -1 (or NULL) with errno set on failure; each errno value has one meaning:
 *
 *   EINVAL        bad argument (NULL handle, negative length, bad index)
 *   ENAMETOOLONG  channel name longer than MESSIP_CHANNEL_NAME_MAXLEN
 *   ENOENT        no channel of that name
 *   EEXIST        the name is taken
 *   ENOSPC        the manager's channel table is full
 *   EMSGSIZE      message larger than the manager's maximum (64 KiB)
 *   ETIMEDOUT     the call's deadline passed
 *   ESRCH         the peer (server or client) is gone
 *   ECONNREFUSED  no manager at that address
 *   ESHUTDOWN     the manager stayed unreachable past the grace period
 *   EPROTO        the peer spoke a protocol we do not understand
 *   EACCES        refused by the manager or the channel's owner
 *   EPERM         not the creator of the channel
 *   ENOMEM        out of memory
 *
 * Thread safety: messip_init, logging and messip_connect may be called
 * from any thread.  A connection and its channels may be used by one
 * thread at a time; different threads using different connections need
 * no locking.
 */
#ifndef MESSIP_H
#define MESSIP_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MESSIP_DEFAULT_PORT        9200
#define MESSIP_NOTIMEOUT           (-1)
#define MESSIP_OK                  1
#define MESSIP_NOK                 0
#define MESSIP_TRUE                (-1)
#define MESSIP_FALSE               0
#define MESSIP_MAXLEN_ID           8
#define MESSIP_CHANNEL_NAME_MAXLEN 47
#define MESSIP_MAX_MSGLEN          65536

/* Receive outcomes other than an index >= 0. */
#define MESSIP_MSG_DISCONNECT      (-2)
#define MESSIP_MSG_DISMISSED       (-3)
#define MESSIP_MSG_TIMEOUT         (-4)
#define MESSIP_MSG_TIMER           (-5)
#define MESSIP_MSG_NOREPLY         (-6)
#define MESSIP_MSG_DEATH_PROCESS   (-7)
#define MESSIP_MSG_CANCELED        (-8)
#define MESSIP_MSG_REPLY           (-9)

/* Log levels (a mask). */
#define MESSIP_LOG_ERROR           0x01
#define MESSIP_LOG_WARNING         0x02
#define MESSIP_LOG_INFO            0x04
#define MESSIP_LOG_INFO_VERBOSE    0x08
#define MESSIP_LOG_DEBUG           0x10

typedef char messip_id_t[MESSIP_MAXLEN_ID + 1];

/* A registration with the manager.  Opaque. */
typedef struct messip_cnx messip_cnx_t;

struct messip_channel_priv;

/* A channel handle, server side or client side.  The members below may
 * be read; the rest is private. */
typedef struct messip_channel {
	char        name[MESSIP_CHANNEL_NAME_MAXLEN + 1];
	messip_id_t remote_id;   /* peer of the last operation */
	int32_t     datalen;     /* length the peer sent */
	int32_t     datalenr;    /* bytes stored in the caller's buffer */
	void      **receive_allmsg; /* [index]: whole message until the reply */
	struct messip_channel_priv *priv;
} messip_channel_t;

/* Once per process (and after fork), before anything else.  Idempotent. */
void messip_init(void);

/* Register with the manager (mgr_ref "host[:port]", or NULL: MESSIP_MGR,
 * /etc/messip, localhost:9200).  NULL with ECONNREFUSED, ETIMEDOUT,
 * EPROTO, EACCES, EINVAL (bad mgr_ref), ENOMEM. */
messip_cnx_t *messip_connect(const char *mgr_ref, const char *id,
			     int msec_timeout);

/* New extension: end the registration, close its channels, free it.
 * 0; -1 with EINVAL.  The handle is freed even when the manager is gone. */
int messip_disconnect(messip_cnx_t *cnx, int msec_timeout);

/* Server: create a channel.  maxnb_msg_buffered bounds its buffered
 * queue (0: the manager's default).  NULL with EEXIST, ENAMETOOLONG,
 * ENOSPC, ETIMEDOUT, ESHUTDOWN, EINVAL, ENOMEM. */
messip_channel_t *messip_channel_create(messip_cnx_t *cnx, const char *name,
					int msec_timeout,
					int32_t maxnb_msg_buffered);

/* Server: 0 deleted; n > 0 clients still connected (nothing deleted);
 * -1 with ENOENT (unknown) or EPERM (not the creator), ETIMEDOUT. */
int messip_channel_delete(messip_channel_t *ch, int msec_timeout);

/* Client: connect to a channel by name.  NULL with ENOENT at once when
 * there is none, ENAMETOOLONG, ETIMEDOUT, ESRCH (server unreachable). */
messip_channel_t *messip_channel_connect(messip_cnx_t *cnx, const char *name,
					 int msec_timeout);

/* New extension: as connect, but wait up to the timeout for the name. */
messip_channel_t *messip_channel_locate(messip_cnx_t *cnx, const char *name,
					int msec_timeout);

/* Client: the server receives MESSIP_MSG_DISCONNECT once.  MESSIP_OK,
 * or -1 with EINVAL.  Frees the handle. */
int messip_channel_disconnect(messip_channel_t *ch, int msec_timeout);

/* Client: 0 when the server answered; MESSIP_MSG_TIMEOUT (ETIMEDOUT);
 * -1 with ESRCH. */
int messip_channel_ping(messip_channel_t *ch, int msec_timeout);

/* Server: wait for the next message or event; see API.md.  Returns an
 * index >= 0 (synchronous message, reply exactly once) or a MESSIP_MSG_*
 * code, MESSIP_MSG_TIMEOUT (errno ETIMEDOUT), or -1 with EINVAL, ENOMEM,
 * EBADMSG (a corrupt message was discarded), ESHUTDOWN. */
int messip_receive(messip_channel_t *ch, int32_t *type, void *buffer,
		   int maxlen, int msec_timeout);

/* Server: reply to index.  0; -1 with EINVAL (index awaits no reply),
 * ESRCH (the client is gone), EMSGSIZE. */
int messip_reply(messip_channel_t *ch, int index, int32_t answer,
		 const void *reply_buffer, int reply_len, int msec_timeout);

/* Client: send and wait for the reply.  0 with *answer set;
 * MESSIP_MSG_TIMEOUT (errno ETIMEDOUT); -1 with ESRCH (server ended),
 * EMSGSIZE, EINVAL, ENOMEM. */
int messip_send(messip_channel_t *ch, int32_t type, const void *send_buffer,
		int send_len, int32_t *answer, void *reply_buffer,
		int reply_maxlen, int msec_timeout);

/* Client: queue a message for the server without waiting for it.  Returns
 * the number of messages queued before this one; -1 with ETIMEDOUT (queue
 * full until the deadline: not queued), ESRCH (no server), EMSGSIZE,
 * ESHUTDOWN. */
int32_t messip_buffered_send(messip_channel_t *ch, int32_t type,
			     const void *send_buffer, int send_len,
			     int msec_timeout);

/* Server: arm a timer; expiries arrive as MESSIP_MSG_TIMER with *type.
 * (timer_t)-1 ... NULL-equivalent on error (EINVAL, ENOMEM). */
timer_t messip_timer_create(messip_channel_t *ch, int32_t type,
			    int msec_1st_shot, int msec_rep_shot,
			    int msec_timeout);

/* Disarm and free a timer.  0; -1 with EINVAL. */
int messip_timer_delete(messip_channel_t *ch, timer_t timer_id);

/* status != 0: this connection's channels receive MESSIP_MSG_DEATH_PROCESS
 * when another registered process ends without disconnecting.
 * 0; -1 with ETIMEDOUT, ESHUTDOWN, EINVAL. */
int messip_death_notify(messip_cnx_t *cnx, int msec_timeout, int status);

/* Vectored variants (new). */
int messip_sendv(messip_channel_t *ch, int32_t type, const struct iovec *iov,
		 int iovcnt, int32_t *answer, void *reply_buffer,
		 int reply_maxlen, int msec_timeout);
int messip_receivev(messip_channel_t *ch, int32_t *type,
		    const struct iovec *iov, int iovcnt, int msec_timeout);
int messip_replyv(messip_channel_t *ch, int index, int32_t answer,
		  const struct iovec *iov, int iovcnt, int msec_timeout);

/* New: a descriptor readable whenever messip_receive would not block.
 * -1 with EINVAL. */
int messip_channel_fd(messip_channel_t *ch);

/* Logging. */
typedef void (*messip_logger_t)(unsigned level, const char *message);
void messip_set_log_level(unsigned mask);
unsigned messip_get_log_level(void);
int messip_log(unsigned level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void messip_set_logger(messip_logger_t logger);

#ifdef __cplusplus
}
#endif

#endif /* MESSIP_H */
