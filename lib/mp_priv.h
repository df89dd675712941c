/*
 * mp_priv — libmessip's private structures, shared by its modules.
 *
 * Objects and who owns them:
 *
 *   struct messip_cnx        one registration with the manager (mp_cnx.c):
 *                            the manager link, its resume state, and the
 *                            list of every channel handle made through it.
 *   struct messip_channel_priv
 *                            the private half of a messip_channel_t; both
 *                            halves are one allocation (mp_chan.c).  A
 *                            handle is either a server channel (struct
 *                            mp_srv, mp_srv.c) or a client's connection to
 *                            someone else's channel (struct mp_cli,
 *                            mp_cli.c).
 *
 * Concurrency: a connection and everything hanging from it is used by one
 * thread at a time (messip.h), so nothing here is locked.
 *
 * Error convention: internal functions return 0 / a count, or -errno;
 * public functions convert once with mp_fail().
 */
#ifndef MP_PRIV_H
#define MP_PRIV_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "messip.h"
#include "mp_auth.h"
#include "mp_prove.h"
#include "mp_link.h"
#include "mp_sock.h"

#define MP_MAX_DATA	   MESSIP_MAX_MSGLEN
#define MP_RESUME_GRACE_MS 5000 /* manager's resume_grace_ms default */
#define MP_CNX_MAGIC	   0x6d70636eu
#define MP_CH_MAGIC	   0x6d706368u
#define MP_IOV_MAX	   62 /* data pieces per frame (mp_link) */

/* What an epoll event's data.ptr points at: every watched object starts
 * with a struct mp_src. */
enum mp_src_kind {
	MP_SRC_MGR = 1, /* the connection's manager link */
	MP_SRC_LISTEN,	/* a server channel's listening socket */
	MP_SRC_PEER,	/* a client connected to a server channel */
	MP_SRC_TIMER,	/* a timerfd */
	MP_SRC_WAKE,	/* a server channel's "queue not empty" eventfd */
};

struct mp_src {
	int kind;
};

struct mp_item;
struct mp_peer;
struct mp_timer;
struct mp_local;      /* the same-host fast path (mp_local.c) */
struct mp_local_held; /* a same-host request awaiting its reply */
struct mp_inproc;      /* the in-process path (mp_inproc.c) */
struct mp_inproc_req;  /* an in-process request */
struct messip_request; /* an asynchronous request (mp_async.c) */

/* A receive index: the request handed to the program, until its reply. */
struct mp_slot {
	struct mp_item *item; /* NULL: free (unless local is set) */
	bool canceled;	      /* the client withdrew it: drop the reply */
	bool cancel_tell;     /* ... and receive has yet to report it
				 (MESSIP_OPT_CANCELED) */
	struct mp_local_held *local; /* a same-host request instead */
	struct mp_inproc_req *inproc; /* an in-process request instead */
};

/* Server side of a channel (mp_srv.c). */
struct mp_srv {
	int epfd;	     /* the one wait: everything below */
	int lfd;	     /* listening socket for direct clients */
	int wakefd;	     /* eventfd: readable while work is queued */
	int mgr_fd;	     /* manager fd currently in epfd, or -1 */
	uint32_t mgr_events; /* its epoll events */
	bool wake_set;
	bool fd_exported;    /* messip_channel_fd was called: keep wakefd */
	struct mp_src lsrc, wsrc;
	struct mp_peer *peers;
	struct mp_item *qhead, *qtail; /* received, not yet handed out */
	unsigned qlen;
	struct mp_slot *slots;
	int nslots;
	struct mp_timer *timers;
	int32_t maxbuf;	    /* maxnb_msg_buffered, for re-registration */
	uint64_t seq_seen;  /* highest BDELIVER sequence queued */
	uint64_t seq_done;  /* highest handed to the program */
	uint64_t ev_seen;   /* highest EVENT sequence queued (0: none) */
	bool seen_any;	    /* seq_seen is meaningful */
	bool done_any;	    /* seq_done is meaningful */
	bool ack_due;	    /* seq_done not yet acknowledged (BACK) */
	uint32_t ack_held;  /* messages handed out since the last BACK */
	int64_t ack_ns;	    /* when the last BACK was sent */
	bool shutdown_told; /* ESHUTDOWN reported once */
	struct mp_spin spin; /* busy-poll before epoll_wait sleeps */
	struct mp_peer *gather; /* its replies are queued, not yet written */
	bool opt_canceled;   /* MESSIP_OPT_CANCELED: report withdrawals */
	unsigned ncancel_tell; /* slots with cancel_tell set */
	/* Return to sender (mp_async.c): requests that reply here. */
	unsigned r2s_pending; /* posted, not yet in the ready queue */
	struct messip_request *rq_head, *rq_tail; /* ready to hand out */
	struct messip_request *rq_last; /* handed out by the last receive */
	int64_t chore_ns;    /* next srv_chores() (MP_TIME_FOREVER: none) */
	bool accept_edge;    /* listen socket edge-triggered: out of fds */
	bool accept_retry;   /* accept_all due again at chore_ns */
	int64_t auth_log_ns; /* last failed direct proof logged */
	unsigned auth_unlogged; /* failed proofs not logged since */
};

/* Client side of a channel (mp_cli.c). */
struct mp_cli {
	struct mp_link link; /* direct connection to the server */
	uint32_t reqid;
	uint32_t hello_reqid; /* WELCOME not yet seen while != 0 */
	bool opened;	      /* link opened (or tried): fd -1 = server gone */
	bool connecting;      /* opened, TCP connect still in progress */
	bool late_possible;   /* a request or ping timed out on this link */
	bool blocking;	      /* reads may wait (mp_sock_blocking_reads) */
	bool proving;	      /* connected, ticket not proven yet (auth) */
	bool refused;	      /* the server refused our ticket: EACCES */
	struct mp_prove auth; /* the exchange on the link (mp_prove.h) */
	int refs;	      /* channel_connect calls not yet undone */
	int32_t server_regno;
	uint64_t server_host;
	struct mp_spin spin; /* busy-poll before waiting for a reply */
	bool gather; /* MESSIP_OPT_GATHER: posted requests wait for a wait */
	/* Asynchronous requests posted here (mp_async.c), oldest first. */
	struct messip_request *reqs, *reqs_tail;
	unsigned nreqs;
};

struct messip_channel_priv {
	uint32_t magic;
	messip_channel_t *pub;
	struct messip_cnx *cnx;
	struct messip_channel_priv *next; /* cnx->chans */
	bool server;
	int32_t handle; /* the manager's channel handle */
	uint64_t gen;
	unsigned epoch; /* registration (cnx->epoch) it belongs to */
	int64_t relocate_by; /* client, handle -1: look for the channel until
				then (mp_chan_cli_handle) */
	char addr[MP_SOCK_ADDR_MAX]; /* server: ours; client: the server's */
	/* The channel ticket, key of the direct links (doc/protocol.md,
	 * "Direct link authentication"): the server draws it, the manager
	 * hands it to the clients it lets connect. */
	struct mp_auth_key ticket;
	struct mp_srv srv;
	struct mp_cli cli;
	struct mp_local *local; /* fast path / zero-copy state, or NULL */
	struct mp_inproc *inproc; /* in-process path, or NULL */
};

/*
 * Pipelined buffered sends of a manager connection (mp_cnx.c): BSEND
 * frames sent without waiting for their RESULT, kept encoded until it
 * comes (so they can be sent again after a resume) and coalesced before
 * they are written.  buf[off, len) holds them oldest first; [off, wr) was
 * handed to the link, [wr, len) not yet.  fr[] holds, oldest first from
 * fhead, each frame's reqid and the offset in buf just after it.
 */
struct mp_pipe_frame {
	uint32_t reqid;
	uint32_t end;
};

struct mp_pipe {
	uint8_t *buf;
	size_t cap, off, wr, len;
	struct mp_pipe_frame *fr;
	unsigned fhead, nfr;
	int32_t queued;	    /* RESULT b of the last BSEND answered, -1 */
	uint32_t mgr_max;   /* manager's max_message_size + 1; 0 unknown */
	uint32_t room;	    /* ring room the last answer reported */
	int64_t last_ns;    /* time of the last pipelined send */
	int64_t unwritten_ns; /* when the oldest unwritten frame was queued */
	/* Coalescing (mp_cnx.c, "The flusher"): lock serialises the
	 * link's output and buf/wr/len between the connection's user and
	 * the flusher thread, which writes [wr, len) only while armed. */
	pthread_mutex_t lock;
	int armed;	    /* atomic; set by the user only, under lock */
	int64_t armed_ns;   /* when armed: the flusher writes from +bound */
	bool listed;	    /* on the flusher's list (fl_mu) */
	struct messip_cnx *fnext;
};

enum mp_cnx_state {
	MP_CNX_UP,	   /* link established and registered */
	MP_CNX_DOWN,	   /* link lost; next attempt at next_try */
	MP_CNX_CONNECTING, /* resume: TCP connect in progress */
	MP_CNX_HELLO,	   /* resume: HELLO sent, waiting for WELCOME */
	MP_CNX_DEAD,	   /* grace period over: ESHUTDOWN */
};

struct messip_cnx {
	uint32_t magic;
	struct mp_src src; /* MP_SRC_MGR */
	struct mp_link mgr;
	enum mp_cnx_state state;
	struct sockaddr_storage sa;
	socklen_t salen;
	char where[MP_SOCK_HOST_MAX + 8]; /* "host:port", for logs */
	char host[MP_SOCK_HOST_MAX];	  /* as dialled: TLS checks it */
	messip_id_t id;
	int32_t regno;
	unsigned epoch;	     /* bumped by every new registration */
	uint64_t token;	     /* resume token */
	uint64_t host_token; /* the manager's host token */
	uint64_t my_host;    /* ours (mp_host_token), 0 if unknown */
	uint32_t reqid;
	uint32_t hello_reqid;
	/* Authentication (mp_auth.h): the secret (len 0: none), and the
	 * exchange on the current link (mp_prove.h). */
	struct mp_auth_key key;
	struct mp_prove auth;
	uint8_t info_ticket[MP_AUTH_NONCE]; /* of the last CH_INFO answer */
	int64_t down_since; /* when the link was lost */
	int64_t next_try;   /* DOWN: next attempt */
	int64_t try_end;    /* CONNECTING/HELLO: attempt deadline */
	int backoff_ms;
	bool death_notify;
	/* Requests that timed out but whose success must be undone if the
	 * answer comes late (CH_CREATE, CH_CONNECT): a small ring. */
	struct {
		uint32_t reqid;
		uint8_t op;
		char name[MESSIP_CHANNEL_NAME_MAXLEN + 1];
	} undo[8];
	unsigned nundo;
	bool rereg; /* a new registration must re-declare */
	bool in_rereg;
	struct mp_spin spin; /* busy-poll before waiting for an answer */
	struct mp_pipe pipe; /* BSENDs sent and not yet answered */
	struct messip_channel_priv *chans;
};

/* Public-boundary conversions. */
static inline int mp_fail(int rc)
{
	errno = -rc;
	return -1;
}

static inline void *mp_fail_ptr(int rc)
{
	errno = -rc;
	return NULL;
}

#endif
