/*
 * mp_log — the log mask, the logger callback and messip_log() (see
 * mp_log.h for who writes where).
 *
 * Invariants: log_mask and log_fn are only accessed with __atomic
 * operations.  Relaxed ordering is enough for both: the mask publishes no
 * other data, and a logger is a function pointer whose code needs no
 * publication (a thread that sees the new pointer may call it; one that
 * still sees the old one calls the old one, which is what "installing a
 * logger while another thread logs" can mean at best).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "messip.h"
#include "mp_export.h"
#include "mp_log.h"

#define MP_LOG_LINE_MAX 1024

static unsigned log_mask = MESSIP_LOG_ERROR | MESSIP_LOG_WARNING;
static messip_logger_t log_fn;

MESSIP_EXPORT void messip_set_log_level(unsigned mask)
{
	__atomic_store_n(&log_mask, mask, __ATOMIC_RELAXED);
}

MESSIP_EXPORT unsigned messip_get_log_level(void)
{
	return __atomic_load_n(&log_mask, __ATOMIC_RELAXED);
}

MESSIP_EXPORT void messip_set_logger(messip_logger_t logger)
{
	__atomic_store_n(&log_fn, logger, __ATOMIC_RELAXED);
}

static const char *level_name(unsigned level)
{
	if (level & MESSIP_LOG_ERROR)
		return "error";
	if (level & MESSIP_LOG_WARNING)
		return "warning";
	if (level & (MESSIP_LOG_INFO | MESSIP_LOG_INFO_VERBOSE))
		return "info";
	return "debug";
}

MESSIP_EXPORT int messip_log(unsigned level, const char *fmt, ...)
{
	char line[MP_LOG_LINE_MAX];
	messip_logger_t fn;
	va_list ap;
	int n;

	if (!fmt || !(level & messip_get_log_level()))
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	/* Classic callers often end their format with "\n"; the logger gets
	 * one line without it, stderr gets exactly one newline. */
	n = (int)strnlen(line, sizeof(line));
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	fn = __atomic_load_n(&log_fn, __ATOMIC_RELAXED);
	if (fn)
		fn(level, line);
	else
		fprintf(stderr, "messip %s: %s\n", level_name(level), line);
	return n;
}

int mp_log_enabled(unsigned level)
{
	return __atomic_load_n(&log_fn, __ATOMIC_RELAXED) &&
	       (level & messip_get_log_level());
}

void mp_log(unsigned level, const char *msgid, const char *fmt, ...)
{
	char line[MP_LOG_LINE_MAX];
	messip_logger_t fn = __atomic_load_n(&log_fn, __ATOMIC_RELAXED);
	va_list ap;
	int n;

	if (!fn || !(level & messip_get_log_level()))
		return;
	n = snprintf(line, sizeof(line), "%s: ", msgid);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	fn(level, line);
}
