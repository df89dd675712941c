/*
 * mgr_log — the manager's log (see mgr_log.h).
 *
 * A line is formatted into one buffer and written with a single write(2)
 * so that lines of concurrent processes sharing stderr do not interleave.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "mgr_log.h"
#include "mp_time.h"

static int log_worker = -1;
static enum mgr_log_level log_level = MGR_LOG_INFO;
static enum mgr_log_target log_target = MGR_LOG_STDERR;
static int syslog_open;

static const char *const level_name[] = { "error", "warning", "info",
					  "debug" };

void mgr_log_set_role(int worker)
{
	log_worker = worker;
}

void mgr_log_setup(enum mgr_log_level level, enum mgr_log_target target)
{
	log_level = level;
	if (target == MGR_LOG_SYSLOG && !syslog_open) {
		openlog("messip-mgr", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		syslog_open = 1;
	}
	log_target = target;
}

int mgr_log_enabled(enum mgr_log_level level)
{
	return level <= log_level;
}

void mgr_log(enum mgr_log_level level, const char *msgid, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char role[24], text[768], line[1024];
	va_list ap;
	int n;

	if (level > log_level || level < MGR_LOG_ERROR)
		return;
	if (log_worker == MGR_LOG_ROLE_STATUS)
		snprintf(role, sizeof(role), "status");
	else if (log_worker < 0)
		snprintf(role, sizeof(role), "master");
	else
		snprintf(role, sizeof(role), "worker %d", log_worker);
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* Ids and channel names come from clients: a newline or an escape
	 * sequence in one must not forge a line or drive a terminal. */
	for (char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (log_target == MGR_LOG_SYSLOG) {
		syslog(prio[level], "%s %s: %s", role, msgid, text);
		return;
	}
	n = snprintf(line, sizeof(line), "messip-mgr[%ld] %s %s %s: %s\n",
		     (long)getpid(), role, level_name[level], msgid, text);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* stderr gone: nowhere left to say so */
	}
}

int mgr_ratelimit_take(struct mgr_ratelimit *rl, uint32_t *suppressed)
{
	int64_t now = mp_time_now_ns();
	int64_t step = (int64_t)MGR_RL_INTERVAL_MS * 1000000;

	if (rl->last_ns == 0) {
		rl->last_ns = now;
		rl->tokens = MGR_RL_BURST;
	}
	while (now - rl->last_ns >= step && rl->tokens < MGR_RL_BURST) {
		rl->tokens++;
		rl->last_ns += step;
	}
	if (rl->tokens == MGR_RL_BURST)
		rl->last_ns = now;
	if (rl->tokens == 0) {
		rl->suppressed++;
		return 0;
	}
	rl->tokens--;
	if (suppressed)
		*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return 1;
}
