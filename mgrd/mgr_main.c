/*
 * messip-mgr — the messip manager daemon: command line, configuration,
 * daemonizing; then the master (mgr_master.c) takes over.
 *
 *   messip-mgr [-f] [-t] [-c FILE] [-p PORT] [-w N]
 *
 * Exit status: 0 ok (or -t: the file is good), 1 configuration or usage
 * error, 2 could not start.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mgr_config.h"
#include "mgr_log.h"
#include "mgr_master.h"
#include "mgr_sec.h"
#include "mgr_net.h"

#ifndef MGR_SYSCONFDIR
#define MGR_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONF MGR_SYSCONFDIR "/messip-mgr.conf"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: messip-mgr [-f] [-t] [-c FILE] [-p PORT] [-w N]\n"
		"  -c FILE  configuration file (default %s;\n"
		"           built-in defaults when that file does not exist)\n"
		"  -t       check the configuration and exit (0 good, 1 bad)\n"
		"  -f       stay in the foreground\n"
		"  -p PORT  listen on PORT (overrides the file)\n"
		"  -w N     run N workers (overrides the file)\n",
		DEFAULT_CONF);
}

/* Apply -p and -w on top of the loaded file.  0 or -EINVAL with err. */
static int apply_overrides(struct mgr_config *c, const char *port,
			   const char *workers, char *err, size_t errlen)
{
	if (port) {
		struct mgr_addr a;
		char *end;
		long p = strtol(port, &end, 10);

		if (*end || p <= 0 || p > 65535) {
			snprintf(err, errlen, "-p: bad port '%s'", port);
			return -EINVAL;
		}
		mgr_net_parse_addr(c->listen, &a);
		mgr_net_set_port(&a, (unsigned)p);
		mgr_net_format(&a, c->listen, sizeof(c->listen));
		/* The status page follows the API port (PORT + 1) unless the
		 * file chose its own, so two managers started with -p on
		 * default settings do not compete for 9201. */
		if (strcmp(c->status_listen, MGR_STATUS_DEFAULT) == 0 &&
		    p < 65535) {
			mgr_net_parse_addr(c->status_listen, &a);
			mgr_net_set_port(&a, (unsigned)p + 1);
			mgr_net_format(&a, c->status_listen,
				       sizeof(c->status_listen));
		}
	}
	if (workers &&
	    mgr_config_set(c, "workers", workers, "-w", 0, err, errlen) < 0)
		return -EINVAL;
	return mgr_config_check(c, "command line", err, errlen);
}

/* Detach from the terminal.  The parent waits until the manager serves
 * (one byte on the pipe) so that its exit status tells whether the
 * start worked.  Returns the descriptor to signal readiness on. */
static int daemonize(void)
{
	int fds[2], nul;
	pid_t pid;
	char b;

	if (pipe(fds) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0) {
		close(fds[1]);
		exit(read(fds[0], &b, 1) == 1 ? MGR_EXIT_OK : MGR_EXIT_STARTUP);
	}
	close(fds[0]);
	setsid();
	pid = fork();
	if (pid < 0)
		_exit(MGR_EXIT_STARTUP);
	if (pid > 0)
		_exit(MGR_EXIT_OK);
	if (chdir("/") < 0) {
		/* "/" always exists */
	}
	umask(077);
	nul = open("/dev/null", O_RDWR);
	if (nul >= 0) {
		dup2(nul, STDIN_FILENO);
		dup2(nul, STDOUT_FILENO);
		if (nul > STDERR_FILENO)
			close(nul);
	}
	return fds[1];
}

int main(int argc, char **argv)
{
	const char *conf = NULL, *port = NULL, *workers = NULL;
	int check = 0, foreground = 0, opt, rc, ready_fd = -1;
	char err[MGR_ERR_MAX];
	struct mgr_config cfg;

	while ((opt = getopt(argc, argv, "c:tfp:w:h")) != -1) {
		switch (opt) {
		case 'c':
			conf = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'f':
			foreground = 1;
			break;
		case 'p':
			port = optarg;
			break;
		case 'w':
			workers = optarg;
			break;
		case 'h':
			usage(stdout);
			return MGR_EXIT_OK;
		default:
			usage(stderr);
			return MGR_EXIT_CONFIG;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return MGR_EXIT_CONFIG;
	}
	mgr_log_set_role(-1);

	rc = mgr_config_load(&cfg, conf ? conf : DEFAULT_CONF, err,
			     sizeof(err));
	if (rc == -ENOENT && !conf) {
		/* No file at the default place: built-in defaults. */
		mgr_config_defaults(&cfg);
		rc = 0;
	} else {
		if (!conf)
			conf = DEFAULT_CONF;
	}
	if (rc < 0) {
		fprintf(stderr, "%s\n", err);
		return MGR_EXIT_CONFIG;
	}
	if (apply_overrides(&cfg, port, workers, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return MGR_EXIT_CONFIG;
	}
	/* The secret and the access policy: checked by -t too, loaded once
	 * here, before the workers are forked (they are restart-only). */
	if (mgr_sec_load(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return MGR_EXIT_CONFIG;
	}
	if (check) {
		printf("%s: configuration OK\n", conf ? conf : "(defaults)");
		return MGR_EXIT_OK;
	}
	mgr_log_setup((enum mgr_log_level)cfg.log_level,
		      (enum mgr_log_target)cfg.log_target);
	if (!foreground) {
		ready_fd = daemonize();
		if (ready_fd < 0) {
			fprintf(stderr, "messip-mgr: cannot daemonize: %s\n",
				strerror(errno));
			return MGR_EXIT_STARTUP;
		}
	}
	return mgr_master_run(&cfg, conf, port ? atoi(port) : -1,
			      workers ? atoi(workers) : -1, ready_fd);
}
