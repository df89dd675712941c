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
 *   EINVAL        bad argument (NULL or stale handle, negative length, an
 *                 index that awaits no reply, a bad manager reference)
 *   ENAMETOOLONG  channel name longer than MESSIP_CHANNEL_NAME_MAXLEN
 *   ENOENT        no channel of that name
 *   EEXIST        the name is taken
 *   ENOSPC        the manager's tables or queue memory are full
 *   EMSGSIZE      message larger than 64 KiB (or the manager's maximum)
 *   ETIMEDOUT     the call's deadline passed
 *   ESRCH         the peer (server or client) is gone
 *   ECONNREFUSED  no manager at that address
 *   ESHUTDOWN     the manager stayed unreachable past the grace period
 *   EPROTO        the peer spoke a protocol we do not understand (also:
 *                 a TLS peer and a plaintext one, or not TLS 1.3)
 *   EACCES        refused by the manager (authentication, access
 *                 policy), the direct link to a server failed its
 *                 ticket exchange (doc/protocol.md), or the TLS
 *                 certificate of the manager or server failed
 *                 verification (MESSIP_TLS_CA)
 *   EPERM         not the creator of the channel
 *   ENOMEM        out of memory
 *   EBADMSG       the same-host segment held garbage for this message
 *                 (another process scribbled over it); the channel goes on
 *   EAGAIN        too many buffers loaned at once (messip_buffer_loan)
 *   ENODATA       no sender credentials for this message (it came over
 *                 TCP, or they did not check out)
 *
 * Timeouts: msec_timeout is MESSIP_NOTIMEOUT (wait forever), 0 (poll) or a
 * deadline in milliseconds for the whole call.  A call that times out
 * leaves everything usable; a late reply is recognised and dropped.
 *
 * Threads: messip_init, messip_connect, messip_log and the other logging
 * calls may be called from any thread at any time.  A connection and
 * every channel handle made through it form one unit that one thread at a
 * time may use (another thread may take over once the first is done with
 * it: no call keeps state between calls that a thread owns); different
 * connections are independent, so threads that each use their own
 * connection need no locking.  The library starts one thread of its own
 * per server channel that has a same-host segment (see "Same host"), and
 * one per process (the flusher) once a pipelined buffered send leaves
 * messages unwritten (see messip_buffered_send); they block every
 * signal, only wait, wake and write, and never run program code.
 *
 * Processes: no call raises SIGPIPE, installs a signal handler or asserts
 * on what a peer sent.  Every descriptor the library opens is
 * close-on-exec.  A connection inherited through fork() is shared by both
 * processes: use it in one of them only, and make a new connection in the
 * other (call messip_init, then messip_connect).  While a child holds
 * copies of a connection's sockets, the manager and the servers do not
 * see the parent end: fork before connecting, or exec.
 *
 * Manager failures: if the link to the manager breaks (a manager worker
 * died), the library reconnects and resumes its registration by itself,
 * from whatever call next looks at the connection (a server sits in
 * messip_receive, a client in messip_send), retrying for 5 s; programs
 * notice nothing.  A process that makes no call at all for longer than
 * that gets a new registration at its next call: its channels are created
 * and connected again under the same names (the servers it was connected
 * to saw MESSIP_MSG_DISMISSED meanwhile).  The same happens when the
 * manager itself restarted.  A client channel whose server has not
 * created it again yet (the server notices the restart only at its next
 * call) is looked for during 5 s: a buffered send waits for it within
 * its timeout; after those 5 s the handle fails with ESRCH for good
 * (connect again by name to reach a server that came later).  A
 * buffered message whose
 * acknowledgement was lost with a worker is sent again, so in that one
 * case a server may receive it twice.
 *
 * Finding the manager: mgr_ref ("host" or "host:port"), else $MESSIP_MGR,
 * else the first non-comment line "host [port [status_port]]" of
 * /etc/messip (or of the file named by $MESSIP_CONFIG), else
 * localhost:9200.
 *
 * Same host: when a client and its server see the same /dev/shm, their
 * synchronous and buffered messages go through a shared-memory segment
 * the server's channel owns (no socket, no system call on the payload,
 * nothing through the manager), with the same semantics as over TCP: the
 * same calls, timeouts, errors and events.  The path is chosen per client
 * handle at its first call, silently: TCP is used when the segment cannot
 * be used (permissions, another PID namespace, the environment variable
 * MESSIP_NO_SHM set to anything but "0" in the client's or the server's
 * process).  messip_channel_path tells which.  Differences:
 *   - buffered messages to a same-host server do not need the manager (no
 *     ESHUTDOWN, no manager size limit); the count returned is of those
 *     queued in the segment;
 *   - MESSIP_MSG_DISCONNECT and MESSIP_MSG_DISMISSED still come from the
 *     manager only, so each is reported once; a same-host client that
 *     dies with a request posted (held by the server, or not yet
 *     received) is noticed by the server's library itself (its slot
 *     freed, a reply to it fails with ESRCH) without waiting for the
 *     manager; the reply checks the client only when the request was
 *     posted more than about a millisecond earlier (a death within that
 *     is as good as one just after the reply);
 *   - a server channel should be created and deleted by the same thread,
 *     one that lives as long as the channel: clients tell that the server
 *     lives from a lock that thread holds (if it ends first, they fall
 *     back to checking the process, which costs a system call per check);
 *     deleting it from another thread leaves its mapping behind until the
 *     process ends.
 * The zero-copy calls (messip_buffer_loan and friends) work on both paths
 * and copy nothing on this one.
 *
 * Threads of one process: when the server channel was created by this
 * very process (another thread, another connection), a client's messages
 * go through an in-process mailbox instead: no socket, no shared memory,
 * nothing through the manager but the names and the DISCONNECT event;
 * same calls, timeouts, errors and events (messip_channel_path says
 * MESSIP_PATH_INPROC; MESSIP_NO_INPROC set to anything but "0" in the
 * server's environment at channel creation turns it off).  Differences:
 *   - messip_send copies the request once; the zero-copy calls copy
 *     nothing at all (the server's messip_receive_view sees the client's
 *     loan itself, messip_send_view's reply view is the server's reply
 *     loan itself, or the request when the server echoes its view);
 *   - buffered messages wait in the mailbox (bounded by the channel's
 *     maxnb_msg_buffered, 256 when 0), not in the manager;
 *   - messip_sender_cred always succeeds (this process's ids);
 *   - a server thread that ends (returns, pthread_exit) while it holds
 *     requests it did not reply to fails them: their clients get ESRCH, as
 *     if the server had died, and a later reply to those indices (by a
 *     thread that took the channel over) is dropped and returns 0;
 *   - a client thread that ends with asynchronous requests outstanding
 *     withdraws them, as if its process had died: the server receives
 *     MESSIP_MSG_DISMISSED for the client (behind MESSIP_MSG_CANCELED for
 *     the ones it held, if it opted in), its replies to them are dropped
 *     and fail with ESRCH, and messip_request_wait on them (by a thread
 *     that took the handle over) returns -1 with ESRCH;
 *   - replies returned to sender (messip_send_async_to) wake the receive
 *     on reply_to at once;
 *   - when the server's channel is deleted or its connection ends, every
 *     client waiting on it, and every later call, gets ESRCH at once.
 *
 * Logging: messip_log() lines of the application go to the installed
 * logger, or to stderr when there is none (the classic behaviour).  The
 * library's own lines (each starting with an id such as
 * "MESSIP-MGR-LOST") go to the installed logger only: without one the
 * library writes nothing.  Both are filtered by the same mask (default
 * MESSIP_LOG_ERROR | MESSIP_LOG_WARNING).
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

/* The path a channel's messages take (messip_channel_path). */
#define MESSIP_PATH_TCP            1
#define MESSIP_PATH_SHM            2
#define MESSIP_PATH_INPROC         3

/* Log levels (a mask). */
#define MESSIP_LOG_ERROR           0x01
#define MESSIP_LOG_WARNING         0x02
#define MESSIP_LOG_INFO            0x04
#define MESSIP_LOG_INFO_VERBOSE    0x08
#define MESSIP_LOG_DEBUG           0x10

typedef char messip_id_t[MESSIP_MAXLEN_ID + 1];

/* An asynchronous request (messip_send_async).  Opaque. */
typedef struct messip_request messip_request_t;

/* Channel options (messip_channel_option). */
#define MESSIP_OPT_CANCELED        1
#define MESSIP_OPT_GATHER          2

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

/* Once per process (and in a child after fork), before anything else.
 * Idempotent and thread-safe; the library also works without it. */
void messip_init(void);

/* Register with the manager under a free-form id (display and
 * notifications; truncated to MESSIP_MAXLEN_ID, need not be unique).
 * mgr_ref: "host", "host:port", "[v6]:port" or NULL (see above).
 * When the manager requires the shared secret, it is read from the file
 * $MESSIP_SECRET_FILE names, else /etc/messip-secret (owner-only mode)
 * and proven by challenge-response; the manager must prove it back.
 * With $MESSIP_TLS_CA the connection is TLS 1.3 and the manager's
 * certificate must verify against that CA file and name the host dialled
 * (messip(3), "TLS").
 * NULL with ECONNREFUSED, ETIMEDOUT, EPROTO (also: TLS on one side only),
 * EACCES (authentication failed: wrong, missing or badly protected
 * secret, or a manager that did not prove it; or the manager's TLS
 * certificate failed verification) or ENOSPC (refused by the manager),
 * EINVAL (bad reference, unknown host, bad $MESSIP_MGR or file line,
 * unusable $MESSIP_TLS_* files), ENOMEM. */
messip_cnx_t *messip_connect(const char *mgr_ref, const char *id,
			     int msec_timeout);

/* New extension: end the registration cleanly (servers see
 * MESSIP_MSG_DISCONNECT, not DISMISSED), delete its channels, free the
 * connection and every channel handle made through it.  0; -1 with
 * EINVAL.  Everything is freed even when the manager cannot be told. */
int messip_disconnect(messip_cnx_t *cnx, int msec_timeout);

/* Server: create a channel.  maxnb_msg_buffered bounds its buffered
 * queue (0: the manager's default).  NULL with EEXIST, ENAMETOOLONG,
 * ENOSPC, ETIMEDOUT, ESHUTDOWN, EINVAL (empty name, negative bound),
 * EACCES (the manager's access policy does not allow it), ENOMEM. */
messip_channel_t *messip_channel_create(messip_cnx_t *cnx, const char *name,
					int msec_timeout,
					int32_t maxnb_msg_buffered);

/* Server: 0 deleted (the handle is freed; clients still linked to it
 * get ESRCH); n > 0 clients still connected (nothing deleted); -1 with
 * ENOENT (unknown), EPERM (not the creator, or a client handle),
 * ETIMEDOUT, ESHUTDOWN, EINVAL. */
int messip_channel_delete(messip_channel_t *ch, int msec_timeout);

/* Client: connect to a channel by name.  Connecting again to the same
 * channel on one connection returns the same handle (counted: each
 * connect needs its disconnect).  NULL with ENOENT at once when there is
 * none, ENAMETOOLONG, EINVAL, ETIMEDOUT, ESRCH (server unreachable),
 * ESHUTDOWN, EPROTO, EACCES (the manager's access policy does not allow
 * it), ENOMEM. */
messip_channel_t *messip_channel_connect(messip_cnx_t *cnx, const char *name,
					 int msec_timeout);

/* New extension: as connect, but wait up to the timeout for the name
 * to appear (then ETIMEDOUT). */
messip_channel_t *messip_channel_locate(messip_cnx_t *cnx, const char *name,
					int msec_timeout);

/* Client: undo one connect; the last one tells the manager (the server
 * receives MESSIP_MSG_DISCONNECT once), closes the link and frees the
 * handle.  A timeout of 0 does not wait for the manager's answer.
 * MESSIP_OK, or -1 with EINVAL (bad handle, or a server handle). */
int messip_channel_disconnect(messip_channel_t *ch, int msec_timeout);

/* Client: 0 when the server answered (from inside its receive: the
 * server program never sees pings); MESSIP_MSG_TIMEOUT (errno
 * ETIMEDOUT); -1 with ESRCH, EACCES (as messip_send), EPROTO, EINVAL. */
int messip_channel_ping(messip_channel_t *ch, int msec_timeout);

/*
 * Server: wait for the next message, timer or event.  Returns
 *   an index >= 0: a synchronous message; reply to it exactly once, in
 *     any order; *type is the sender's type, ch->remote_id its id;
 *     indices are small and reused after the reply;
 *   MESSIP_MSG_NOREPLY: a buffered message (*type, remote_id: sender);
 *   MESSIP_MSG_TIMER: a timer expired (*type: the timer's type);
 *   MESSIP_MSG_DISCONNECT, MESSIP_MSG_DISMISSED, MESSIP_MSG_DEATH_PROCESS:
 *     remote_id is the client or process concerned (*type is 0);
 *   MESSIP_MSG_TIMEOUT (errno ETIMEDOUT): nothing before the deadline;
 *   MESSIP_MSG_CANCELED: the client withdrew the request at index *type
 *     (only with MESSIP_OPT_CANCELED, see messip_channel_option);
 *   MESSIP_MSG_REPLY: the reply to a request this process posted with
 *     messip_send_async_to and this channel as reply_to (*type: the
 *     answer; see messip_reply_request);
 *   -1 with EINVAL (bad or client handle, maxlen < 0, NULL buffer with
 *     maxlen > 0), ENOMEM, or ESHUTDOWN: reported once when the manager
 *     link is given up; receive goes on serving direct clients and
 *     timers afterwards.
 * ch->datalen is the message's length, ch->datalenr what was stored.  A
 * message longer than maxlen is still received: the first maxlen bytes
 * go to buffer and the whole of it is in ch->receive_allmsg[index] until
 * the reply.  Dynamic mode: maxlen 0 and buffer != NULL means buffer is a
 * void **; a buffer of the message's size is malloc'ed, its address
 * stored there, and the caller frees it.
 */
int messip_receive(messip_channel_t *ch, int32_t *type, void *buffer,
		   int maxlen, int msec_timeout);

/* Server: reply to index.  0 (also when the client had withdrawn the
 * request -- a timeout, messip_request_cancel -- whether or not receive
 * reported MESSIP_MSG_CANCELED for it: the reply is dropped, the index
 * freed); MESSIP_MSG_TIMEOUT
 * (errno ETIMEDOUT: nothing was sent, the index still awaits its reply);
 * -1 with EINVAL (index awaits no reply, bad length), ESRCH (the client
 * is gone -- on the in-process path, its thread ended with the request
 * outstanding: the index is freed, the server carries on), EMSGSIZE. */
int messip_reply(messip_channel_t *ch, int index, int32_t answer,
		 const void *reply_buffer, int reply_len, int msec_timeout);

/* Client: send and wait for the reply.  0 with *answer set (answer may
 * be NULL); a reply longer than reply_maxlen is cut (ch->datalen tells
 * its length, ch->datalenr what was stored); dynamic mode as in receive.
 * MESSIP_MSG_TIMEOUT (errno ETIMEDOUT: the request is withdrawn and a
 * late reply dropped); -1 with ESRCH (the server ended or is
 * unreachable), EACCES (the direct link failed its ticket exchange:
 * refused by the server, or the server could not prove the ticket; with
 * $MESSIP_TLS_CA: the server's certificate failed verification),
 * EMSGSIZE, EINVAL, ENOMEM, EPROTO (also: a TLS client and a plaintext
 * server, or the other way round). */
int messip_send(messip_channel_t *ch, int32_t type, const void *send_buffer,
		int send_len, int32_t *answer, void *reply_buffer,
		int reply_maxlen, int msec_timeout);

/* Client (or the channel's own server): queue a message for the server
 * without waiting for it.  Returns the number of messages queued before
 * this one.  A full queue makes the call wait for room.  -1 with
 * ETIMEDOUT (still full at the deadline: not queued), ESRCH (the channel
 * is gone), EMSGSIZE, ESHUTDOWN, EACCES, EINVAL. */
/*
 * Through the manager, a stream of buffered sends is pipelined: a send
 * that follows the previous one of its connection within 200 us returns
 * once the library holds the message (it keeps it until the manager
 * confirms it, and sends it again after a reconnection), without waiting
 * for the manager's answer; its return value is then an upper bound (the
 * count at the last answer plus the messages sent since).  Such messages
 * are written in batches: what a call leaves unwritten is written by the
 * library's flusher thread within about 150 us, whether or not the
 * program calls again, and at once by messip_send, messip_channel_ping,
 * messip_disconnect and exit().  A process killed by a signal (or
 * ending with _exit) within that time may lose those messages.  A lone
 * send, and any send while the ring is full as far as the library knows,
 * waits for the manager's answer as described above.
 */
int32_t messip_buffered_send(messip_channel_t *ch, int32_t type,
			     const void *send_buffer, int send_len,
			     int msec_timeout);

/* Server: arm a timer: first expiry after msec_1st_shot (0: at once),
 * then every msec_rep_shot (0: one shot).  Expiries arrive through
 * messip_receive as MESSIP_MSG_TIMER with *type.  No signal is used.
 * msec_timeout is unused (arming never waits).  The timer, or NULL
 * ((timer_t)0) with EINVAL (negative time, bad or client handle), ENOMEM,
 * EMFILE. */
timer_t messip_timer_create(messip_channel_t *ch, int32_t type,
			    int msec_1st_shot, int msec_rep_shot,
			    int msec_timeout);

/* Disarm and free a timer; expiries not yet received are dropped.  0;
 * -1 with EINVAL (not a timer of this channel). */
int messip_timer_delete(messip_channel_t *ch, timer_t timer_id);

/* status != 0: this connection's channels receive MESSIP_MSG_DEATH_PROCESS
 * when another registered process ends without disconnecting.
 * 0; -1 with ETIMEDOUT, ESHUTDOWN, EINVAL. */
int messip_death_notify(messip_cnx_t *cnx, int msec_timeout, int status);

/*
 * Asynchronous requests (new).  The client's choice: the server receives
 * and replies as usual and cannot tell.
 *
 * messip_send_async posts a request (as messip_send would send it) and
 * returns at once with a handle, without waiting for the reply; the
 * timeout bounds the posting only (a link still connecting, or, on the
 * same-host path, every slot of the server's segment taken: 64 per
 * channel, shared by its clients).  Many requests may be outstanding on
 * one handle; the server receives them in the order they were posted and
 * may reply in any order; each reply is matched to its request by id.
 * NULL with EINVAL (bad or server handle, bad length), EMSGSIZE,
 * ETIMEDOUT (not posted), ESRCH (the server is gone), EACCES (as
 * messip_send), ENOMEM.
 *
 * A request belongs to its handle: disconnecting the handle withdraws and
 * frees its requests (their handles are then invalid), and the rules of
 * the handle's thread apply (see "Threads" above).  While a client waits
 * on one request, a send, a ping or another request's wait, replies to
 * its other requests are read and kept for them.
 */
messip_request_t *messip_send_async(messip_channel_t *ch, int32_t type,
				    const void *send_buffer, int send_len,
				    int msec_timeout);

/* Vectored variant (at most 62 pieces, as messip_sendv). */
messip_request_t *messip_sendv_async(messip_channel_t *ch, int32_t type,
				     const struct iovec *iov, int iovcnt,
				     int msec_timeout);

/*
 * Wait for req's reply.  0 with *answer set (answer may be NULL), the
 * reply stored as messip_send stores it (cut to reply_maxlen; dynamic
 * mode; ch->datalen and ch->datalenr of req's handle): the request is
 * done and its handle freed.  MESSIP_MSG_TIMEOUT (errno ETIMEDOUT): not
 * yet; the request stays outstanding (wait again, or cancel it).  -1
 * with ESRCH (the server ended or its link broke before replying; the
 * request is freed), EINVAL (not a request handle, a request made with
 * messip_send_async_to, bad buffer: nothing happens), ENOMEM, EBADMSG,
 * EPROTO (freed).
 */
int messip_request_wait(messip_request_t *req, int32_t *answer,
			void *reply_buffer, int reply_maxlen,
			int msec_timeout);

/*
 * Withdraw req.  Exactly one of two outcomes, never both:
 *   0  withdrawn: the handle is freed and no reply will ever be
 *      delivered for it.  If the server had not received it yet, it
 *      never will; if it had, its receive reports MESSIP_MSG_CANCELED
 *      with that index in *type (channels that opted in with
 *      MESSIP_OPT_CANCELED only), and its reply is dropped (messip_reply
 *      returns 0).  Over TCP the reply may also have been sent already,
 *      and is then dropped on arrival.
 *   1  too late: the reply (or the server's end) is already here;
 *      collect it with messip_request_wait, which returns at once (for
 *      messip_send_async_to it is delivered to reply_to as usual).
 * Never waits.  -1 with EINVAL (not a request handle).
 */
int messip_request_cancel(messip_request_t *req);

/*
 * Return to sender: as messip_send_async, but the reply arrives as a
 * message on reply_to, a server channel of the same connection as ch (so
 * one thread serves both): messip_receive(reply_to, ...) returns
 * MESSIP_MSG_REPLY with *type the server's answer, the reply data in the
 * buffer (cut, dynamic mode, datalen, datalenr as for any message) and
 * remote_id the server's id; messip_reply_request then tells which
 * request it was.  Replies are noticed within about a millisecond while
 * that receive sleeps (at once on the in-process path).  Such a request cannot be waited for (EINVAL);
 * it can be withdrawn.  Deleting reply_to drops the replies it had not
 * handed out and turns its requests still outstanding into ordinary ones
 * (collect them with messip_request_wait).  Errors as messip_send_async,
 * EINVAL also for a reply_to that is not a server channel of ch's
 * connection.
 */
messip_request_t *messip_send_async_to(messip_channel_t *ch, int32_t type,
				       const void *send_buffer, int send_len,
				       messip_channel_t *reply_to,
				       void *cookie, int msec_timeout);

/* The cookie given to messip_send_async_to (NULL for other requests or
 * an invalid handle). */
void *messip_request_cookie(const messip_request_t *req);

/*
 * After messip_receive(ch, ...) returned MESSIP_MSG_REPLY: the request it
 * answers, valid until the next receive on ch (then freed), with its
 * cookie and *status 0 (a reply) or ESRCH (the server ended or its link
 * broke first: no data, *type 0).  cookie and status may be NULL.  NULL
 * with EINVAL when the last receive on ch returned something else.
 */
messip_request_t *messip_reply_request(messip_channel_t *ch, void **cookie,
				       int *status);

/*
 * Set a channel option; returns its previous value.
 *   MESSIP_OPT_GATHER (client handle; 0 or 1, default 0): over TCP,
 *     requests posted with messip_send_async are not written one by one
 *     but gathered: each 2 KiB gathered are written together (one
 *     system call for many small requests), and what is left as soon as
 *     the handle waits for anything (messip_request_wait, messip_send, a
 *     ping, the receive of its reply_to channel).  For pipelining
 *     clients that post a batch, then wait: the last requests posted may
 *     not reach the server before the client waits.  The same-host path
 *     writes nothing and ignores the option.
 *   MESSIP_OPT_CANCELED (server channel; 0 or 1, default 0): receive reports a request
 *     withdrawn by its client after the server received it (the client
 *     timed out in messip_send, or called messip_request_cancel) as
 *     MESSIP_MSG_CANCELED, with the request's index in *type and the
 *     client's id in remote_id.  The index still awaits its reply: reply
 *     to it as usual (any answer; it is dropped, messip_reply returns 0)
 *     to free it.  At most one report per index, none once the reply was
 *     made.  Without the option a server never sees MESSIP_MSG_CANCELED.
 * -1 with EINVAL (bad handle, unknown option or value, an option of the
 * other side).
 */
int messip_channel_option(messip_channel_t *ch, int option, int value);

/* Vectored variants (new): the message is the concatenation of at most
 * 62 pieces (more: EINVAL); otherwise as send, receive (no dynamic mode)
 * and reply. */
int messip_sendv(messip_channel_t *ch, int32_t type, const struct iovec *iov,
		 int iovcnt, int32_t *answer, void *reply_buffer,
		 int reply_maxlen, int msec_timeout);
int messip_receivev(messip_channel_t *ch, int32_t *type,
		    const struct iovec *iov, int iovcnt, int msec_timeout);
int messip_replyv(messip_channel_t *ch, int index, int32_t answer,
		  const struct iovec *iov, int iovcnt, int msec_timeout);

/* New: for a server channel, a descriptor that is readable whenever
 * messip_receive would not block, for poll/epoll/event loops.  It may
 * also wake for manager traffic that belongs to another channel of the
 * same connection: after poll, call receive with a timeout of 0 (it then
 * returns MESSIP_MSG_TIMEOUT).  The descriptor belongs to the channel:
 * do not read it or close it.  -1 with EINVAL (bad or client handle). */
int messip_channel_fd(messip_channel_t *ch);

/*
 * Same host and zero copy (new).
 *
 * Which path: for a client handle, MESSIP_PATH_INPROC when its server is
 * a channel of this process (see "Threads of one process"),
 * MESSIP_PATH_SHM when its messages go through the server's same-host
 * segment, MESSIP_PATH_TCP otherwise (the choice is made, if not yet, by
 * this call); for a server channel, MESSIP_PATH_SHM when it has a segment
 * that same-host clients may use (threads of this process always may use
 * its mailbox).
 * -1 with EINVAL (bad handle).
 */
int messip_channel_path(messip_channel_t *ch);

/*
 * Client: borrow a buffer of len bytes to build a request in place, then
 * send it with messip_send_loaned or messip_send_view (or give it back
 * with messip_buffer_release).  On the same-host path it is the request
 * area of a slot of the segment, so the request is never copied; over TCP
 * it is ordinary memory.  At most 8 loans per handle are outstanding.
 * Waits up to the timeout when every slot of the segment is taken.  NULL
 * with EINVAL (bad or server handle), EMSGSIZE (len over 64 KiB),
 * ETIMEDOUT, ESRCH (the server is gone), EAGAIN (8 loans outstanding),
 * ENOMEM.
 */
void *messip_buffer_loan(messip_channel_t *ch, size_t len, int msec_timeout);

/*
 * Client: give back a loaned buffer that was not sent, or end a reply
 * view of messip_send_view.  0; -1 with EINVAL (not a loan or view of
 * this handle).
 */
int messip_buffer_release(messip_channel_t *ch, const void *buf);

/*
 * Client: send the first len bytes of the loaned buf (len at most what
 * was loaned) and wait for the reply, as messip_send (the reply is copied
 * to reply_buffer, truncation and dynamic mode alike).  The loan ends
 * with the call, whatever its outcome.  0, MESSIP_MSG_TIMEOUT (errno
 * ETIMEDOUT), -1 with EINVAL (buf is not a loan of this handle: it is
 * kept), EMSGSIZE (len over the loan: kept), ESRCH, EBADMSG, EPROTO,
 * ENOMEM.
 */
int messip_send_loaned(messip_channel_t *ch, int32_t type, void *buf, int len,
		       int32_t *answer, void *reply_buffer, int reply_maxlen,
		       int msec_timeout);

/*
 * Client: as messip_send_loaned, but the reply is not copied: *reply
 * points at it (read-only, *reply_len bytes; ch->datalen too) until
 * messip_buffer_release(ch, *reply) or the next call on ch that sends,
 * pings or loans.  On the same-host path the view is the reply's place in
 * the segment, and holds its slot until released.  Same returns and
 * errors (EINVAL also for NULL reply or reply_len).
 */
int messip_send_view(messip_channel_t *ch, int32_t type, void *buf, int len,
		     int32_t *answer, const void **reply, int *reply_len,
		     int msec_timeout);

/*
 * Server: as messip_receive, but nothing is copied for a same-host
 * request: *data is a read-only view of the message (*len bytes, also in
 * ch->datalen), valid until the reply to the index returned.  A request
 * that came over TCP is viewed where the library holds it (also until the
 * reply); a buffered message (MESSIP_MSG_NOREPLY) is copied into a
 * buffer of the channel, valid until the next receive.  For timers and
 * events *data is NULL and *len 0.  Returns and errors as
 * messip_receive (EINVAL also for NULL data or len).
 */
int messip_receive_view(messip_channel_t *ch, int32_t *type,
			const void **data, int *len, int msec_timeout);

/*
 * Server: a buffer of len bytes to build the reply to index in place,
 * then send with messip_reply_loaned.  On the same-host path it is the
 * reply area of the request's slot (the request's view stays valid
 * beside it), so the reply is never copied; otherwise ordinary memory,
 * freed by the reply.  NULL with EINVAL (bad handle, or index awaits no
 * reply), EMSGSIZE (len over 64 KiB), ENOMEM.
 */
void *messip_reply_loan(messip_channel_t *ch, int index, size_t len);

/*
 * Server: reply to index with the first len bytes of buf (normally from
 * messip_reply_loan for that index; any memory works, and is copied).
 * Returns and errors as messip_reply.  Replying with the request's own
 * view (echo) copies nothing either.
 */
int messip_reply_loaned(messip_channel_t *ch, int index, int32_t answer,
			void *buf, int len, int msec_timeout);

/*
 * Server: who sent the request at index, for same-host requests: the
 * pid, uid and gid the client wrote, checked against /proc/<pid> once per
 * client (that process exists and belongs to that uid and gid).  That
 * catches stale or garbage values, not a process lying on behalf of
 * another of the same owner.  Any pointer may be NULL.  0; -1 with EINVAL
 * (bad handle, index awaits no reply), ENODATA (a TCP request, or the
 * check failed).
 */
int messip_sender_cred(messip_channel_t *ch, int index, pid_t *pid,
		       uid_t *uid, gid_t *gid);

/* Logging (see above).  messip_log returns the length of the line
 * logged, 0 when the mask filtered it out.  messip_set_logger(NULL) goes
 * back to stderr for the application's lines. */
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
