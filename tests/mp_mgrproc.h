/*
 * mp_mgrproc — start and stop a real messip-mgr for a test.
 *
 * The manager runs in the foreground as a child recorded by the harness
 * (so the watchdog and clean-up kill it), on a free loopback port, with a
 * config file written to a temporary path from the lines the test gives.
 */
#ifndef MP_MGRPROC_H
#define MP_MGRPROC_H

#include <stddef.h>
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

/*
 * Run the manager binary once with arg ("-t": check, "-f": foreground) on
 * a config file holding conf_text (written to a temporary path whose name
 * ends in "run.conf", removed after).  Its exit status, 128 when killed
 * by a signal, or -1 when it still ran after 5 s (then killed); what it
 * wrote on stdout and stderr in out (NUL-terminated).
 */
int mp_mgrproc_run(const char *conf_text, const char *arg, char *out,
		   size_t outlen);

/*
 * Start the manager binary in the foreground on the config file conf,
 * after setup(arg) ran in the child (e.g. entering a network namespace;
 * it may be NULL, and returns < 0 to give up: the child exits 126).  The
 * pid (a recorded child), or -errno.  No wait for it to accept.
 */
pid_t mp_mgrproc_exec(const char *conf, int (*setup)(const void *),
		      const void *arg);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int mp_free_port(void);

/* Connect a blocking TCP socket to 127.0.0.1:port; fd or -errno. */
int mp_tcp_connect_local(int port);

#endif
