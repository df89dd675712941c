/*
 * mp_memsock — in-memory stand-ins for AF_UNIX SOCK_STREAM socketpairs,
 * for a test program that drives code which does socket I/O (the
 * manager's worker, through tests/mp_mgrloop) without paying a system
 * call per read and write.  The product code runs unchanged: the program
 * is linked with -Wl,--wrap= for each call below (MP_MEMSOCK_WRAP in
 * tests/hard.am), so every call to it in every object goes to
 * __wrap_<call>, which serves the descriptors this module made and passes
 * any other descriptor to the real call.
 *
 * While mp_memsock_on is set, socketpair(AF_UNIX, SOCK_STREAM...) makes
 * two fake descriptors (numbers from MP_MEMSOCK_FD0 up, which the kernel
 * never hands out); a pair made before stays what it is either way.
 * Buffers are static (nothing allocated, so a fuzz input's malloc and
 * free counts stay even) and the module's code has no coverage
 * instrumentation (it is the harness, not code under test).
 *
 * Semantics emulated (those of Linux unix stream sockets, non-blocking):
 *   recv: the bytes queued for this end, as many as asked (across writes,
 *     as unix_stream_read_generic does); none queued: a pending
 *     ECONNRESET (the peer closed with bytes it had not read), else 0 once
 *     the peer shut its writing side or closed, else EAGAIN.  A zero
 *     length returns 0.  Blocking sockets are served as non-blocking ones
 *     (one thread: a wait could never end).
 *   send: EPIPE (and SIGPIPE without MSG_NOSIGNAL) once this end shut its
 *     writing side or the peer closed or shut its reading side; else as
 *     many bytes as fit under MP_MEMSOCK_CAP queued at the peer (a partial
 *     count), none: EAGAIN.  Real sockets also charge each write's buffer
 *     overhead, so many tiny writes fill them sooner: not emulated.
 *   ioctl FIONREAD: the bytes queued for this end.
 *   shutdown: SHUT_RD / SHUT_WR / SHUT_RDWR as above.
 *   close: the last descriptor of an end closes it; bytes queued for it
 *     and unread then reset the peer (ECONNRESET at its next recv).
 *   fcntl F_DUPFD / F_DUPFD_CLOEXEC: the lowest free fake number >= arg
 *     (EMFILE past MP_MEMSOCK_FDS); F_GETFL: O_RDWR | O_NONBLOCK;
 *     F_SETFL, F_GETFD, F_SETFD: 0.  Other commands: EINVAL.
 *   epoll_ctl: ADD (EEXIST if the number is in that set), MOD and DEL
 *     (ENOENT if not); the set is never waited on (mp_mgrloop calls the
 *     worker's handlers itself), and a number leaves it when closed.
 *   getpeername / getsockname: an unnamed AF_UNIX address.
 * Any other call on a fake descriptor reaches the kernel: EBADF.
 *
 * Single-threaded use only.
 */
#ifndef MP_MEMSOCK_H
#define MP_MEMSOCK_H

#include <stddef.h>

#define MP_MEMSOCK_FD0 (1 << 30)   /* first fake descriptor number */
#define MP_MEMSOCK_FDS 1024        /* fake descriptors at most */
#define MP_MEMSOCK_PAIRS 16        /* fake pairs at most (EMFILE) */
#define MP_MEMSOCK_CAP 212992      /* bytes queued per end at most (the
				      default net.core.wmem_default) */

/* Set: socketpair makes fake pairs. */
extern int mp_memsock_on;

/* 1 if fd is one of this module's descriptors. */
int mp_memsock_is(int fd);

/* Fake descriptors open now (a leak check for tests). */
size_t mp_memsock_open_count(void);

#endif
