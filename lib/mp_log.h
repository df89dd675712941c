/*
 * mp_log — logging inside libmessip.
 *
 * Two kinds of log line exist:
 *   - messip_log() calls made by the application itself: filtered by the
 *     mask, then given to the installed logger or, without one, written to
 *     stderr (the classic behaviour programs rely on);
 *   - the library's own lines (mp_log()): filtered by the same mask and
 *     given to the installed logger only.  Without a logger the library
 *     writes nothing anywhere (STYLE.md: "the library logs nothing unless
 *     the application installs a logger"), so it never interleaves text
 *     with a program's own stderr.
 *
 * Each library line starts with a stable, greppable id ("MESSIP-MGR-LOST").
 * The mask and the logger are read and written atomically: every function
 * here may be called from any thread.
 */
#ifndef MP_LOG_H
#define MP_LOG_H

#include "messip.h"

/* Library-internal log line: "<msgid>: <text>", to the logger if any. */
void mp_log(unsigned level, const char *msgid, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Non-zero when a line at level would go anywhere (saves formatting). */
int mp_log_enabled(unsigned level);

#endif
