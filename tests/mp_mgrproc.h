/*
 * mp_mgrproc — start and stop a real messip-mgr for a test.
 *
 * The manager runs in the foreground as a child recorded by the harness
 * (so the watchdog and clean-up kill it), on a free loopback port, with a
 * config file written to a temporary path from the lines the test gives.
 */
#ifndef MP_MGRPROC_H
#define MP_MGRPROC_H

#include <sys/types.h>

struct mp_mgrproc {
	pid_t pid;
	int   port;
	char  conf[256];      /* path of the config file written */
	char  ref[64];        /* "127.0.0.1:port", for messip_connect */
};

/*
 * Start a manager with `workers` workers (0: leave to the config) and the
 * extra config lines in extra_conf (may be NULL; "key value\n..." text).
 * Waits until it accepts connections (up to 10 s).  The binary is
 * $MP_MGR_BIN or ./mgrd/messip-mgr (tests run from the build directory).
 * Returns 0 or -errno; on failure nothing is left running.
 */
int mp_mgrproc_start(struct mp_mgrproc *m, int workers, const char *extra_conf);

/* SIGTERM, wait up to 5 s (then SIGKILL); returns the wait status, or -1
 * if it had to be killed.  Removes the config file. */
int mp_mgrproc_stop(struct mp_mgrproc *m);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int mp_free_port(void);

/* Connect a blocking TCP socket to 127.0.0.1:port; fd or -errno. */
int mp_tcp_connect_local(int port);

#endif
