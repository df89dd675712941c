/*
 * mgr_master — the supervising process.
 *
 * It binds the listening socket, creates the segment and one eventfd per
 * worker, forks the workers, and then only supervises: it restarts a
 * worker that dies (immediately, or with back-off when the worker keeps
 * dying right after it starts; never when it exits MGR_EXIT_FATAL),
 * reloads the reloadable settings on SIGHUP, and on SIGTERM/SIGINT stops
 * the workers and removes the segment.  It takes no lock of the segment:
 * a dead worker's registrations are orphaned by bumping its epoch (one
 * atomic store), and repairs happen in the workers, under the lock.
 *
 * Signal handlers only set flags; one loop (ppoll with the signals
 * unblocked only while it waits) acts on them.
 */
#ifndef MGR_MASTER_H
#define MGR_MASTER_H

#include "mgr_config.h"

/* Exit statuses of messip-mgr. */
#define MGR_EXIT_OK      0
#define MGR_EXIT_CONFIG  1   /* bad configuration or command line */
#define MGR_EXIT_STARTUP 2   /* could not start (port taken, no shm...) */

/*
 * Run the manager with configuration c (conf_path: the file to re-read on
 * SIGHUP, NULL when running on built-in defaults; overrides: the -p/-w
 * values to re-apply after a reload, < 0 when not given; ready_fd: a
 * descriptor to write one byte to and close once the manager serves, or
 * -1).  Returns the process exit status.
 */
int mgr_master_run(const struct mgr_config *c, const char *conf_path,
		   int port_override, int workers_override, int ready_fd);

#endif
