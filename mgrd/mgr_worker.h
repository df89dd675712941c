/*
 * mgr_worker — one worker process: an epoll loop over the shared
 * listening socket (EPOLLEXCLUSIVE, so one worker takes each new
 * connection), its eventfd (wake-ups from other workers and the master)
 * and every connection it accepted.
 *
 * The worker keeps only per-connection state in its heap; everything other
 * workers may need is in the segment (mgr_state).  It never blocks except
 * in epoll_wait: ring pushes do not wait (a full ring parks the request),
 * LOCATE waits are timers.
 *
 * Timers are coarse: every MGR_TICK_MS the worker checks handshake and
 * partial-frame deadlines, parked and LOCATE deadlines, housekeeping of the
 * segment, settings reloads and whether the master is still alive.
 */
#ifndef MGR_WORKER_H
#define MGR_WORKER_H

#include <stdint.h>
#include <sys/types.h>

#include "mgr_config.h"
#include "mgr_conn.h"
#include "mgr_state.h"

#define MGR_TICK_MS    50
#define MGR_EXIT_FATAL 78   /* EX_CONFIG: setup failed, do not respawn */

/* A CH_CONNECT with LOCATE waiting for its name. */
struct mgr_locate {
	struct mgr_conn *conn;
	uint32_t reqid;
	int64_t  deadline_ns;
	char     name[MP_WIRE_NAME_MAX + 1];
	struct mgr_locate *next;
};

struct mgr_worker {
	int index;
	struct mgr_config cfg;      /* reloadable fields follow the master */
	struct mgr_state *st;
	int epfd, lfd, efd;
	int spare_fd;               /* kept to shed a connection on EMFILE */
	pid_t master_pid;
	int64_t now;                /* monotonic ns, updated once per pass */
	uint64_t host_token;
	char host_token_str[24];
	size_t in_limit;            /* input bytes buffered per connection */
	uint32_t settings_gen;

	struct mgr_conn *conns;     /* every connection (list) */
	struct mgr_conn *dirty;     /* connections with output to flush */
	struct mgr_conn *tls_ready; /* connections whose input TLS holds */
	struct mgr_conn **reg_conn; /* registration index -> connection */
	struct mgr_locate *locates;
	uint32_t nparked;           /* connections with a parked BSEND */
	int pipe_more; /* the frame after the current one is a pipelined
			  BSEND (mgr_proto: its RESULT answers both) */
	int events_blocked;         /* an event waits for output room */
	int deliver_blocked;        /* a record waits for memory */
	struct mgr_ratelimit accept_rl;
	struct mgr_ratelimit peer_rl;   /* per-peer warnings (bad input...) */
};

/*
 * Run worker `index` until told to stop (SIGTERM) or until the master is
 * gone.  Called in the child right after fork.  Returns the exit status:
 * 0, or MGR_EXIT_FATAL when set-up failed.
 */
int mgr_worker_run(struct mgr_state *st, const struct mgr_config *cfg,
		   int index, int lfd, int efd, pid_t master,
		   uint64_t host_token);

/* Input bytes buffered per connection: one maximal frame and a read's
 * worth behind it (see mgr_conn.h). */
static inline size_t mgr_worker_in_limit(const struct mgr_config *cfg)
{
	return MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX +
	       (size_t)cfg->max_message_size + 65536;
}

/* Put c on the flush list (its output is written at the end of the pass). */
void mgr_worker_dirty(struct mgr_worker *w, struct mgr_conn *c);

/* Forget registration of c (after BYE or when it ends). */
void mgr_worker_unbind(struct mgr_worker *w, struct mgr_conn *c);

/*
 * The loop's steps, so that a harness can play the loop over connections
 * it made itself (the fuzz target, the allocation-failure tests): the
 * caller fills w as mgr_worker_run would (index, cfg, st after
 * mgr_state_attach_worker, epfd, efd, reg_conn, in_limit; lfd -1).
 *
 * mgr_worker_adopt: take fd (a connected stream socket) as a new
 *   connection, as accept does; NULL (fd closed) on ENOMEM or when
 *   epoll_ctl fails.
 * mgr_worker_serve: what the loop does for epoll events `events` on c;
 *   c may be closed (freed) by it.
 * mgr_worker_end_pass: the end of a pass: wake-up hints, then flush; with
 *   tick_too, also the tick's timers (deadlines, housekeeping).
 * mgr_worker_close_all: close every connection; ending: as an unclean end
 *   of their registrations (else they are left to be orphaned).
 */
struct mgr_conn *mgr_worker_adopt(struct mgr_worker *w, int fd,
				  const char *peer);
void mgr_worker_serve(struct mgr_worker *w, struct mgr_conn *c,
		      uint32_t events);
void mgr_worker_end_pass(struct mgr_worker *w, int tick_too);
void mgr_worker_close_all(struct mgr_worker *w, int ending);

#endif
