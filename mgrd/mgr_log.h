/*
 * mgr_log — the manager's log: one call per event, with a level and a
 * stable, greppable message id (MESSIP-MGR-...).
 *
 * Every line carries the role ("master", "worker 3") and the pid, so a
 * line read alone says which process wrote it.  Output goes to stderr or
 * to syslog (config log_target); the level filter is config log_level and
 * can change on reload.  Per-peer errors go through a rate limiter
 * (struct mgr_ratelimit) so that a misbehaving client cannot flood the log.
 *
 * Control characters in the text are written as '?', so that client
 * strings (ids, channel names) cannot forge lines.
 *
 * The module keeps process-local state only (role, level, target); each
 * process of the manager sets its own after fork.
 */
#ifndef MGR_LOG_H
#define MGR_LOG_H

#include <stdint.h>

enum mgr_log_level {
	MGR_LOG_ERROR = 0,
	MGR_LOG_WARNING,
	MGR_LOG_INFO,
	MGR_LOG_DEBUG,
};

enum mgr_log_target {
	MGR_LOG_STDERR = 0,
	MGR_LOG_SYSLOG,
};

/* Set the role shown in every line: worker >= 0 is "worker N",
 * MGR_LOG_ROLE_STATUS the status process, any other negative value the
 * master.  Call after fork. */
#define MGR_LOG_ROLE_STATUS (-2)
void mgr_log_set_role(int worker);

/* Level filter and output; switching to syslog opens it ("messip-mgr",
 * LOG_PID, LOG_DAEMON). */
void mgr_log_setup(enum mgr_log_level level, enum mgr_log_target target);

/* Whether a line at level would be written. */
int mgr_log_enabled(enum mgr_log_level level);

/* Write one line: "messip-mgr[pid] ROLE LEVEL MSGID: text". */
void mgr_log(enum mgr_log_level level, const char *msgid, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Token bucket for per-peer log lines: at most `burst` lines, refilled at
 * one line per MGR_RL_INTERVAL_MS. */
#define MGR_RL_BURST       5
#define MGR_RL_INTERVAL_MS 2000

struct mgr_ratelimit {
	int64_t  last_ns;     /* last refill */
	uint32_t tokens;
	uint32_t suppressed;  /* lines dropped since the last one written */
};

/* Take a token: 1 means write the line (and *suppressed, when not NULL,
 * receives how many were dropped before it), 0 means drop it. */
int mgr_ratelimit_take(struct mgr_ratelimit *rl, uint32_t *suppressed);

#endif
