/*
 * mgr_status — the manager's status page: a small HTTP server in a
 * process of its own, and the renderers of what it shows.
 *
 * Who serves.  The master forks one status process next to the workers
 * and supervises it like a worker (restarted when it dies, with back-off
 * when it keeps dying at start; never when it exits MGR_EXIT_FATAL).  Not
 * the master: it must not parse network input nor be able to crash.  Not
 * a worker: a page scrape would then sit in the data path, and a worker
 * killed mid-scrape would cost its clients a resume.  The status process
 * holds the status listener (bound by the master, so a port clash is
 * reported at start-up) and nothing of the data path: it closes the API
 * listener and the wake-up eventfds, and it never takes the segment's
 * lock.
 *
 * Reading the segment.  The status process maps the segment read-only
 * (mprotect right after fork: a bug here can never write shared state)
 * and reads it lock-free, treating every byte as untrusted: a record is
 * copied, then validated (state in range, index below the trusted
 * layout's bounds, strings cut at their array size) and used only if its
 * state and identity (generation or registration number) did not change
 * while it was copied.  A record caught changing is skipped and counted;
 * a page is therefore a near-instant picture, never a wedge: nothing here
 * waits on the manager.
 *
 * HTTP.  GET only (405 otherwise), "/" (HTML), "/metrics" (Prometheus text
 * format 0.0.4), "/status.json"; 404 for any other path.  At most
 * MGR_STATUS_MAX_CONNS connections at once, in one poll loop; a request
 * is at most MGR_STATUS_REQ_MAX bytes (431 past it) and must be complete
 * within MGR_STATUS_READ_MS of the accept (else 408 and close); the answer
 * must drain within MGR_STATUS_WRITE_MS.  Buffers are fixed-size per
 * connection; the only allocation is the rendered answer, whose size comes
 * from the tables (capped at MGR_STATUS_MAX_ROWS rows per table and
 * MGR_STATUS_OUT_MAX bytes), never from a length the peer sent.  Every
 * answer closes the connection; a connection past the slots gets 503.
 *
 * Client text (ids, peers, channel names) is escaped for HTML or JSON,
 * and invalid UTF-8 and control characters are replaced, so any segment
 * content renders as a valid page.  The process is named
 * "messip-mgr-stat" in the process list (the workers keep "messip-mgr")
 * and runs at nice 10; its log role is "status".
 */
#ifndef MGR_STATUS_H
#define MGR_STATUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mgr_config.h"
#include "mgr_state.h"

#define MGR_STATUS_MAX_CONNS   16
#define MGR_STATUS_REQ_MAX     4096
#define MGR_STATUS_READ_MS     2000
#define MGR_STATUS_WRITE_MS    10000
#define MGR_STATUS_MAX_ROWS    1000
#define MGR_STATUS_OUT_MAX     (4u * 1024 * 1024)
#define MGR_STATUS_JSON_FORMAT 1 /* "format" of /status.json */

/* ---- supervision (master side) ----------------------------------------- */

/* What the master keeps about its status process. */
struct mgr_status_sup {
	int fd;	   /* status listener, -1: none */
	pid_t pid; /* > 0 while the process runs */
	int64_t started_ns;
	int64_t respawn_at; /* > 0: restart due at this monotonic time */
	int backoff_ms;
	int quick_deaths;
	int fatal; /* exited MGR_EXIT_FATAL: not restarted */
	uint32_t restarts;
	char where[96]; /* "ip:port" of the listener */
};

/* Empty supervisor (no listener, no process). */
void mgr_status_init(struct mgr_status_sup *s);

/*
 * Master, at start: bind the status listener of c (nothing when
 * status_listen is "off").  A failure is logged and leaves the manager
 * without a status page rather than stopping it (the API matters more).
 * Returns 0, or the -errno of the bind (-EADDRINUSE, -EACCES, -EINVAL).
 */
int mgr_status_listen(struct mgr_status_sup *s, const struct mgr_config *c);

/*
 * Master: fork the status process (no-op without a listener or after a
 * fatal exit).  api_lfd is the API listener, closed in the child.
 * Returns 0, or -errno of fork (a restart is then scheduled in 1 s).
 */
int mgr_status_spawn(struct mgr_status_sup *s, struct mgr_state *st,
		     const struct mgr_config *c, int api_lfd);

/*
 * Master, for each reaped child: 1 if pid was the status process (its
 * restart is scheduled and the death logged), else 0.
 */
int mgr_status_reaped(struct mgr_status_sup *s, pid_t pid, int wstatus);

/*
 * Master loop: restart the status process when due, and lower *next
 * (monotonic ns) to the time the next restart is due.
 */
void mgr_status_tick(struct mgr_status_sup *s, struct mgr_state *st,
		     const struct mgr_config *c, int api_lfd, int64_t *next);

/* Master, stopping: SIGTERM the status process, wait (1 s, then
 * SIGKILL), close the listener. */
void mgr_status_stop(struct mgr_status_sup *s);

/* In any other child of the master (a worker): close the listener. */
void mgr_status_close_in_child(struct mgr_status_sup *s);

/* ---- the status process -------------------------------------------------- */

/*
 * Serve until SIGTERM/SIGINT or until the master (pid master) is gone.
 * Called in the child right after fork; st is the master's handle,
 * inherited.  restarts: how many times the master restarted this process
 * (shown in /metrics).  Returns the exit status: 0, or MGR_EXIT_FATAL
 * (78, from mgr_worker.h) when set-up failed.
 */
int mgr_status_run(struct mgr_state *st, const struct mgr_config *c, int lfd,
		   pid_t master, uint32_t restarts);

/* ---- snapshot and renderers ---------------------------------------------- */

struct mgr_status_worker {
	uint32_t pid;
	uint32_t running;
	int64_t uptime_s; /* -1: not running */
	uint64_t connections, registrations, channels, accepted, delivered,
		requests, errors, restarts;
};

struct mgr_status_reg {
	uint32_t index, regno, worker, state; /* state: enum mgr_reg_state */
	int32_t pid;
	int64_t since;	    /* realtime seconds */
	uint32_t serves;    /* channels it created */
	uint32_t connected; /* channels it is a client of */
	char id[MGR_ID_LEN];
	char peer[56];
};

struct mgr_status_ch {
	uint32_t slot, capacity, nclients, server_regno;
	int32_t queued; /* -1: ring unreadable */
	int64_t since;
	char name[MP_CHTAB_NAME_MAX + 1];
	char server_id[MGR_ID_LEN]; /* "" if unknown */
	char server_peer[56];
};

/* A picture of the segment; the arrays are allocated once (row caps). */
struct mgr_status_snap {
	int64_t now; /* realtime seconds */
	uint32_t nworkers, master_pid;
	uint32_t max_regs, max_channels, max_links;
	struct mgr_status_worker workers[MGR_MAX_WORKERS];
	/* totals over the whole tables (not only the rows kept) */
	uint32_t regs_live, regs_orphan, regs_dead;
	uint32_t channels, links, links_pending;
	uint64_t queued;
	uint32_t skipped; /* records that failed validation or moved */
	/* rows, sorted (registrations by number, channels by name) */
	struct mgr_status_reg *regs;
	uint32_t nregs, regs_cap, regs_more; /* more: rows left out */
	struct mgr_status_ch *chans;
	uint32_t nchans, chans_cap, chans_more;
	/* identity of the page */
	char listen[MGR_ADDR_MAX];
	uint32_t status_restarts;
	uint64_t http[6]; /* answers sent, by status class (2..5) */
};

/* Allocate the row arrays for layout lay.  0 or -ENOMEM. */
int mgr_status_snap_init(struct mgr_status_snap *s,
			 const struct mgr_layout *lay);
void mgr_status_snap_free(struct mgr_status_snap *s);

/* Fill s from the segment, lock-free (see above).  Never fails. */
void mgr_status_snapshot(struct mgr_state *st, struct mgr_status_snap *s);

/* Output buffer with a hard cap: appends past max set `full` and are
 * dropped (the caller then answers 500). */
struct mgr_sbuf {
	char *p;
	size_t len, cap, max;
	int full;
};

void mgr_sbuf_free(struct mgr_sbuf *b);

/* Render s as an HTML page, Prometheus text, or JSON into b.  0, or
 * -ENOBUFS when the output would pass b->max. */
int mgr_status_render_html(const struct mgr_status_snap *s, struct mgr_sbuf *b);
int mgr_status_render_metrics(const struct mgr_status_snap *s,
			      struct mgr_sbuf *b);
int mgr_status_render_json(const struct mgr_status_snap *s, struct mgr_sbuf *b);

#endif
