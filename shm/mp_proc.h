/*
 * mp_proc — what /proc says of a process: its stat line and run state.
 * One reader for the manager (is a peer or an older manager alive?) and
 * the channel segment (a client's start time, zombies).  Leaf module: no
 * logging; pid is untrusted (taken from shared memory or the network)
 * and only meaningful in the caller's PID namespace.
 */
#ifndef MP_PROC_H
#define MP_PROC_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Read /proc/<pid>/stat (pid <= 0: self) into buf (NUL-terminated).
 * Returns a pointer to its last ')', which ends the command name (field
 * 2, which may hold spaces and parentheses: count fields from there), or
 * NULL with errno set (ENOENT: no such process; or the open/read error).
 */
char *mp_proc_stat(pid_t pid, char *buf, size_t size);

/*
 * The state letter of pid (field 3: 'R', 'S', 'Z', ...), -ESRCH when
 * /proc has no such process, 0 when it cannot tell.
 */
int mp_proc_state(pid_t pid);

/* 1 when pid has exited and awaits its reaping ('Z', or 'X' while being
 * reaped), else 0 (alive, gone, or unknown). */
int mp_proc_zombie(pid_t pid);

#endif
