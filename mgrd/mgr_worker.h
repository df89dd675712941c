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
	struct mgr_conn **reg_conn; /* registration index -> connection */
	struct mgr_locate *locates;
	uint32_t nparked;           /* connections with a parked BSEND */
	int pipe_more; /* the frame after the current one is a pipelined
			  BSEND (mgr_proto: its RESULT answers both) */
	int events_blocked;         /* an event waits for output room */
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

/* Put c on the flush list (its output is written at the end of the pass). */
void mgr_worker_dirty(struct mgr_worker *w, struct mgr_conn *c);

/* Forget registration of c (after BYE or when it ends). */
void mgr_worker_unbind(struct mgr_worker *w, struct mgr_conn *c);

#endif
