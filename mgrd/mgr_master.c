/*
 * mgr_master — supervision loop (see mgr_master.h).
 *
 * Invariants: pids[i] > 0 exactly while worker i runs; a worker slot with
 * respawn_at > 0 is due for a restart at that time; fatal[i] marks a
 * worker that exited MGR_EXIT_FATAL and is not restarted.  The status
 * process (mgr_status.h) is supervised the same way through `status`.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mgr_log.h"
#include "mgr_master.h"
#include "mgr_net.h"
#include "mgr_sec.h"
#include "mgr_state.h"
#include "mgr_status.h"
#include "mgr_worker.h"
#include "mp_host.h"
#include "mp_time.h"

#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000
#define QUICK_DEATH_NS   (1000 * 1000000LL) /* died within 1 s of start */
#define STOP_GRACE_MS    3000

struct master {
	struct mgr_config cfg;
	const char *conf_path;
	int port_override, workers_override;
	struct mgr_state st;
	int lfd;
	int efds[MGR_MAX_WORKERS];
	pid_t pids[MGR_MAX_WORKERS];
	int64_t started[MGR_MAX_WORKERS];
	int64_t respawn_at[MGR_MAX_WORKERS];
	int backoff_ms[MGR_MAX_WORKERS];
	int quick_deaths[MGR_MAX_WORKERS];
	int fatal[MGR_MAX_WORKERS];
	uint64_t host_token;
	struct mgr_status_sup status;
};

static volatile sig_atomic_t got_chld, got_hup, got_term;

static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		got_chld = 1;
	else if (sig == SIGHUP)
		got_hup = 1;
	else
		got_term = 1;
}

static void setup_signals(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t block;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_signal;
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	/* Blocked except inside ppoll(), so a signal can never slip in
	 * between the flag checks and the wait. */
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, waitmask);
	sigdelset(waitmask, SIGCHLD);
	sigdelset(waitmask, SIGHUP);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	/* Each connection is a descriptor: use what we are allowed. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int spawn(struct master *m, int i)
{
	pid_t pid = fork();

	if (pid < 0) {
		int e = errno;

		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-FORK",
			"fork of worker %d: %s; retrying in 1 s", i,
			strerror(e));
		m->respawn_at[i] = mp_time_now_ns() + 1000000000LL;
		return -e;
	}
	if (pid == 0) {
		int rc;

		mgr_status_close_in_child(&m->status);
		rc = mgr_worker_run(&m->st, &m->cfg, i, m->lfd, m->efds[i],
				    getppid(), m->host_token);

		_exit(rc);
	}
	m->pids[i] = pid;
	m->started[i] = mp_time_now_ns();
	m->respawn_at[i] = 0;
	mgr_state_worker_started(&m->st, i, pid);
	return 0;
}

/* Reap dead workers and schedule their restart. */
static void reap(struct master *m)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int64_t now = mp_time_now_ns();
		int i;

		if (mgr_status_reaped(&m->status, pid, status))
			continue;
		for (i = 0; i < (int)m->cfg.workers; i++)
			if (m->pids[i] == pid)
				break;
		if (i == (int)m->cfg.workers)
			continue;
		m->pids[i] = 0;
		mgr_state_worker_died(&m->st, i);
		/* Its connections died with it: so did their counts. */
		mgr_sec_peers_reset((unsigned)i);
		if (WIFEXITED(status) && WEXITSTATUS(status) == MGR_EXIT_FATAL) {
			m->fatal[i] = 1;
			mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-WORKERFATAL",
				"worker %d (pid %ld) failed to set up; not "
				"restarting it",
				i, (long)pid);
			continue;
		}
		/* The first early death restarts at once; each further one
		 * in a row doubles the wait (a crash loop at start-up must
		 * not hog the machine). */
		if (now - m->started[i] < QUICK_DEATH_NS) {
			m->quick_deaths[i]++;
			m->backoff_ms[i] =
				m->quick_deaths[i] < 2
					? 0
				: m->backoff_ms[i] ? m->backoff_ms[i] * 2
						   : BACKOFF_MIN_MS;
			if (m->backoff_ms[i] > BACKOFF_MAX_MS)
				m->backoff_ms[i] = BACKOFF_MAX_MS;
		} else {
			m->quick_deaths[i] = 0;
			m->backoff_ms[i] = 0;
		}
		m->respawn_at[i] = now + m->backoff_ms[i] * 1000000LL;
		if (WIFSIGNALED(status))
			mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-WORKERDIED",
				"worker %d (pid %ld) killed by signal %d; "
				"restarting in %d ms",
				i, (long)pid, WTERMSIG(status),
				m->backoff_ms[i]);
		else
			mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-WORKERDIED",
				"worker %d (pid %ld) exited with status %d; "
				"restarting in %d ms",
				i, (long)pid, WEXITSTATUS(status),
				m->backoff_ms[i]);
	}
}

static void reload(struct master *m)
{
	struct mgr_config fresh;
	char err[MGR_ERR_MAX], changed[256], num[16];
	int n;

	if (!m->conf_path) {
		mgr_log(MGR_LOG_INFO, "MESSIP-MGR-RELOAD",
			"SIGHUP: running on built-in defaults, nothing to "
			"reload");
		return;
	}
	if (mgr_config_load(&fresh, m->conf_path, err, sizeof(err)) < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-RELOADFAIL",
			"%s; keeping the current settings", err);
		return;
	}
	/* Command-line overrides still apply. */
	if (m->workers_override > 0) {
		snprintf(num, sizeof(num), "%d", m->workers_override);
		mgr_config_set(&fresh, "workers", num, "-w", 0, err,
			       sizeof(err));
	}
	if (m->port_override > 0)
		snprintf(fresh.listen, sizeof(fresh.listen), "%s",
			 m->cfg.listen);
	n = mgr_config_apply_reload(&m->cfg, &fresh, changed, sizeof(changed));
	if (changed[0])
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-RELOADSTATIC",
			"changed settings need a restart to apply: %s",
			changed);
	mgr_log_setup((enum mgr_log_level)m->cfg.log_level,
		      (enum mgr_log_target)m->cfg.log_target);
	m->st.resume_grace_ms = m->cfg.resume_grace_ms;
	m->st.default_buffered = (uint32_t)m->cfg.default_buffered;
	mgr_state_publish_settings(&m->st, &m->cfg);
	mgr_log(MGR_LOG_INFO, "MESSIP-MGR-RELOAD",
		"reloaded %s: %d setting(s) changed", m->conf_path, n);
}

/* Stop the workers: SIGTERM, then SIGKILL after the grace period. */
static void stop_workers(struct master *m, const sigset_t *waitmask)
{
	int64_t deadline = mp_time_deadline(STOP_GRACE_MS);
	int left;

	for (int i = 0; i < (int)m->cfg.workers; i++)
		if (m->pids[i] > 0)
			kill(m->pids[i], SIGTERM);
	for (;;) {
		struct timespec ts = { 0, 20 * 1000000 };

		left = 0;
		for (int i = 0; i < (int)m->cfg.workers; i++) {
			if (m->pids[i] > 0 &&
			    waitpid(m->pids[i], NULL, WNOHANG) == m->pids[i])
				m->pids[i] = 0;
			if (m->pids[i] > 0)
				left++;
		}
		if (!left || mp_time_now_ns() >= deadline)
			break;
		ppoll(NULL, 0, &ts, waitmask);
	}
	for (int i = 0; i < (int)m->cfg.workers; i++) {
		if (m->pids[i] > 0) {
			kill(m->pids[i], SIGKILL);
			waitpid(m->pids[i], NULL, 0);
			m->pids[i] = 0;
		}
	}
}

static int start(struct master *m)
{
	struct mgr_addr a;
	char name[64], where[96];
	pid_t other = 0;
	int rc;

	mgr_net_parse_addr(m->cfg.listen, &a);
	mgr_net_format(&a, where, sizeof(where));
	m->lfd = mgr_net_listen(&a, 4096);
	if (m->lfd < 0) {
		if (m->lfd == -EADDRINUSE)
			mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-INUSE",
				"cannot listen on %s: address in use (is "
				"another messip-mgr running on this port?)",
				where);
		else
			mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-LISTEN",
				"cannot listen on %s: %s", where,
				strerror(-m->lfd));
		return -1;
	}
	rc = mp_host_token(&m->host_token);
	if (rc < 0) {
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-HOSTTOKEN",
			"no host token (%s); clients will not use the "
			"same-host path", strerror(-rc));
		m->host_token = 0;
	}
	for (int i = 0; i < (int)m->cfg.workers; i++) {
		m->efds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (m->efds[i] < 0) {
			mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-EVENTFD",
				"eventfd: %s", strerror(errno));
			return -1;
		}
	}
	snprintf(name, sizeof(name), "/messip-mgr-%u", mgr_net_port(&a));
	rc = mgr_state_create(&m->st, &m->cfg, name, m->efds, &other);
	if (rc == -EEXIST) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-INUSE",
			"segment %s belongs to a running manager (pid %ld); "
			"refusing to start",
			name, (long)other);
		return -1;
	}
	if (rc < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-SHM",
			"cannot create segment %s: %s", name, strerror(-rc));
		return -1;
	}
	if (m->st.lay.max_channels < m->cfg.max_channels)
		mgr_log(MGR_LOG_INFO, "MESSIP-MGR-RINGMEM",
			"ring_memory %lld allows %u channels of %u-byte rings "
			"(max_channels %lld)",
			(long long)m->cfg.ring_memory, m->st.lay.max_channels,
			m->st.lay.ring_data_bytes,
			(long long)m->cfg.max_channels);
	mgr_log(MGR_LOG_INFO, "MESSIP-MGR-START",
		"listening on %s with %lld workers, segment %s (%zu bytes)",
		where, (long long)m->cfg.workers, name, m->st.lay.total);
	/* Not fatal: a manager without its status page still serves. */
	mgr_status_listen(&m->status, &m->cfg);
	return 0;
}

int mgr_master_run(const struct mgr_config *c, const char *conf_path,
		   int port_override, int workers_override, int ready_fd)
{
	static struct master mm;
	struct master *m = &mm;
	sigset_t waitmask;
	int status = MGR_EXIT_OK;

	memset(m, 0, sizeof(*m));
	m->cfg = *c;
	m->conf_path = conf_path;
	m->port_override = port_override;
	m->workers_override = workers_override;
	m->lfd = -1;
	mgr_status_init(&m->status);
	for (int i = 0; i < MGR_MAX_WORKERS; i++)
		m->efds[i] = -1;
	mgr_log_set_role(-1);
	raise_nofile();
	setup_signals(&waitmask);
	if (start(m) < 0 || mgr_sec_peers_init((unsigned)m->cfg.workers) < 0) {
		mgr_status_stop(&m->status);
		mgr_state_close(&m->st);
		return MGR_EXIT_STARTUP;
	}
	for (int i = 0; i < (int)m->cfg.workers; i++)
		spawn(m, i);
	mgr_status_spawn(&m->status, &m->st, &m->cfg, m->lfd);
	if (ready_fd >= 0) {
		if (write(ready_fd, "1", 1) < 0) {
			/* the parent is gone: nobody to tell */
		}
		close(ready_fd);
	}

	while (!got_term) {
		int64_t now = mp_time_now_ns(), next = now + 1000000000LL;
		struct timespec ts;
		int alive = 0;

		if (got_chld) {
			got_chld = 0;
			reap(m);
		}
		if (got_hup) {
			got_hup = 0;
			reload(m);
		}
		for (int i = 0; i < (int)m->cfg.workers; i++) {
			if (m->pids[i] == 0 && !m->fatal[i] &&
			    m->respawn_at[i] && now >= m->respawn_at[i]) {
				spawn(m, i);
			}
			if (m->pids[i] == 0 && !m->fatal[i] &&
			    m->respawn_at[i] && m->respawn_at[i] < next)
				next = m->respawn_at[i];
			if (m->pids[i] > 0 || !m->fatal[i])
				alive++;
		}
		mgr_status_tick(&m->status, &m->st, &m->cfg, m->lfd, &next);
		if (!alive) {
			mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-NOWORKERS",
				"every worker failed to set up; stopping");
			status = MGR_EXIT_STARTUP;
			break;
		}
		now = mp_time_now_ns();
		if (next < now)
			next = now;
		ts.tv_sec = (time_t)((next - now) / 1000000000LL);
		ts.tv_nsec = (long)((next - now) % 1000000000LL);
		ppoll(NULL, 0, &ts, &waitmask);
	}
	mgr_log(MGR_LOG_INFO, "MESSIP-MGR-STOP", "stopping");
	mgr_status_stop(&m->status);
	stop_workers(m, &waitmask);
	mgr_state_close(&m->st);
	close(m->lfd);
	for (int i = 0; i < (int)m->cfg.workers; i++)
		close(m->efds[i]);
	return status;
}
