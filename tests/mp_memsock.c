/*
 * mp_memsock — in-memory socketpairs behind --wrap'ed calls (see
 * mp_memsock.h for the semantics).
 *
 * Invariants: a slot of fds[] is either free (pair NULL) or names one end
 * of a used pair; an end's refs is the number of slots naming it; a pair
 * is free again when both ends reach 0 refs; an end's ring holds len <=
 * MP_MEMSOCK_CAP bytes from head.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp_memsock.h"

/* This module is the harness's transport, not code under test: no
 * coverage feedback from it (the fuzzer would chase ring positions). */
#if defined(__clang__)
#define NOCOV __attribute__((no_sanitize("coverage")))
#elif defined(__has_attribute)
#if __has_attribute(no_sanitize_coverage)
#define NOCOV __attribute__((no_sanitize_coverage))
#endif
#endif
#ifndef NOCOV
#define NOCOV
#endif

struct ms_end {
	int refs;          /* descriptors open on this end */
	int rd_shut;       /* SHUT_RD done here */
	int wr_shut;       /* SHUT_WR done here */
	int err;           /* pending error for recv (ECONNRESET), 0: none */
	size_t head, len;  /* bytes queued for this end: a ring in buf */
	uint8_t *buf;      /* MP_MEMSOCK_CAP bytes */
};

struct ms_pair {
	int used;
	struct ms_end e[2];
};

struct ms_slot {
	struct ms_pair *pair;  /* NULL: free */
	int side;
	int epfd;              /* epoll set holding this number, -1: none */
};

/* Everything static: no allocation in a fuzz input that outlives it
 * (libFuzzer reruns such an input to look for leaks), no growth. */
static struct ms_pair pairs[MP_MEMSOCK_PAIRS];
static uint8_t bufs[MP_MEMSOCK_PAIRS][2][MP_MEMSOCK_CAP];

int mp_memsock_on;

static struct ms_slot fds[MP_MEMSOCK_FDS];
static size_t nopen;

ssize_t __real_recv(int fd, void *buf, size_t len, int flags);
ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
int __real_close(int fd);
int __real_shutdown(int fd, int how);
int __real_ioctl(int fd, unsigned long req, ...);
int __real_fcntl(int fd, int cmd, ...);
int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __real_socketpair(int domain, int type, int proto, int sv[2]);
int __real_getpeername(int fd, struct sockaddr *sa, socklen_t *len);
int __real_getsockname(int fd, struct sockaddr *sa, socklen_t *len);

ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags);
int __wrap_close(int fd);
int __wrap_shutdown(int fd, int how);
int __wrap_ioctl(int fd, unsigned long req, ...);
int __wrap_fcntl(int fd, int cmd, ...);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __wrap_socketpair(int domain, int type, int proto, int sv[2]);
int __wrap_getpeername(int fd, struct sockaddr *sa, socklen_t *len);
int __wrap_getsockname(int fd, struct sockaddr *sa, socklen_t *len);

NOCOV int mp_memsock_is(int fd)
{
	return fd >= MP_MEMSOCK_FD0 && fd - MP_MEMSOCK_FD0 < MP_MEMSOCK_FDS &&
	       fds[fd - MP_MEMSOCK_FD0].pair;
}

NOCOV size_t mp_memsock_open_count(void)
{
	return nopen;
}

NOCOV static struct ms_slot *slot_of(int fd)
{
	return mp_memsock_is(fd) ? &fds[fd - MP_MEMSOCK_FD0] : NULL;
}

NOCOV static struct ms_end *end_of(const struct ms_slot *s)
{
	return &s->pair->e[s->side];
}

NOCOV static struct ms_end *peer_of(const struct ms_slot *s)
{
	return &s->pair->e[!s->side];
}

/* A free slot at or above fd number min, or -EMFILE. */
NOCOV static int slot_take(struct ms_pair *pair, int side, int min)
{
	int i = min > MP_MEMSOCK_FD0 ? min - MP_MEMSOCK_FD0 : 0;

	for (; i < MP_MEMSOCK_FDS; i++) {
		if (!fds[i].pair) {
			fds[i].pair = pair;
			fds[i].side = side;
			fds[i].epfd = -1;
			pair->e[side].refs++;
			nopen++;
			return MP_MEMSOCK_FD0 + i;
		}
	}
	return -EMFILE;
}

NOCOV static int fail(int err)
{
	errno = err;
	return -1;
}

/* Copy the first n bytes queued in e's ring to dst. */
NOCOV static void ring_get(const struct ms_end *e, uint8_t *dst, size_t n)
{
	size_t pos = (e->head) % MP_MEMSOCK_CAP, first = MP_MEMSOCK_CAP - pos;

	if (first > n)
		first = n;
	memcpy(dst, e->buf + pos, first);
	memcpy(dst + first, e->buf, n - first);
}

NOCOV static void ring_put(struct ms_end *e, const uint8_t *src, size_t n)
{
	size_t pos = (e->head + e->len) % MP_MEMSOCK_CAP;
	size_t first = MP_MEMSOCK_CAP - pos;

	if (first > n)
		first = n;
	memcpy(e->buf + pos, src, first);
	memcpy(e->buf, src + first, n - first);
	e->len += n;
}

NOCOV static ssize_t ms_recv(struct ms_slot *s, void *buf, size_t len)
{
	struct ms_end *e = end_of(s), *pe = peer_of(s);
	size_t n = e->len;

	if (len == 0)
		return 0;
	if (n == 0) {
		if (e->err) {
			int err = e->err;

			e->err = 0;
			return fail(err);
		}
		if (pe->refs == 0 || pe->wr_shut || e->rd_shut)
			return 0;
		return fail(EAGAIN);
	}
	if (n > len)
		n = len;
	ring_get(e, buf, n);
	e->head = (e->head + n) % MP_MEMSOCK_CAP;
	e->len -= n;
	if (e->len == 0)
		e->head = 0;
	return (ssize_t)n;
}

NOCOV static ssize_t ms_send(struct ms_slot *s, const void *buf, size_t len,
			     int flags)
{
	struct ms_end *e = end_of(s), *pe = peer_of(s);
	size_t n;

	if (e->wr_shut || pe->refs == 0 || pe->rd_shut) {
		if (!(flags & MSG_NOSIGNAL))
			raise(SIGPIPE);
		return fail(EPIPE);
	}
	if (len == 0)
		return 0;
	if (pe->len >= MP_MEMSOCK_CAP)
		return fail(EAGAIN);
	n = len < MP_MEMSOCK_CAP - pe->len ? len : MP_MEMSOCK_CAP - pe->len;
	ring_put(pe, buf, n);
	return (ssize_t)n;
}

NOCOV static void ms_close(struct ms_slot *s)
{
	struct ms_pair *pair = s->pair;
	struct ms_end *e = end_of(s), *pe = peer_of(s);

	s->pair = NULL;
	s->epfd = -1;
	nopen--;
	if (--e->refs > 0)
		return;
	if (e->len > 0 && pe->refs > 0)
		pe->err = ECONNRESET;
	e->head = e->len = 0;
	if (pe->refs == 0)
		pair->used = 0;
}

NOCOV ssize_t __wrap_recv(int fd, void *buf, size_t len, int flags)
{
	struct ms_slot *s = slot_of(fd);

	if (!s)
		return __real_recv(fd, buf, len, flags);
	return ms_recv(s, buf, len);
}

NOCOV ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
	struct ms_slot *s = slot_of(fd);

	if (!s)
		return __real_send(fd, buf, len, flags);
	return ms_send(s, buf, len, flags);
}

NOCOV int __wrap_close(int fd)
{
	struct ms_slot *s = slot_of(fd);

	if (!s) {
		if (fd >= MP_MEMSOCK_FD0)
			return fail(EBADF);
		return __real_close(fd);
	}
	ms_close(s);
	return 0;
}

NOCOV int __wrap_shutdown(int fd, int how)
{
	struct ms_slot *s = slot_of(fd);

	if (!s)
		return __real_shutdown(fd, how);
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return fail(EINVAL);
	if (how != SHUT_WR)
		end_of(s)->rd_shut = 1;
	if (how != SHUT_RD)
		end_of(s)->wr_shut = 1;
	return 0;
}

NOCOV int __wrap_ioctl(int fd, unsigned long req, ...)
{
	struct ms_slot *s = slot_of(fd);
	void *arg;
	va_list ap;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!s)
		return __real_ioctl(fd, req, arg);
	if (req != FIONREAD)
		return fail(ENOTTY);
	*(int *)arg = (int)end_of(s)->len;
	return 0;
}

NOCOV int __wrap_fcntl(int fd, int cmd, ...)
{
	struct ms_slot *s = slot_of(fd);
	long arg;
	va_list ap;

	/* Every command this program uses takes an int or nothing; reading
	 * a long covers both on the ABIs we build for (x86-64, arm64). */
	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	if (!s)
		return __real_fcntl(fd, cmd, arg);
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC: {
		int nfd = slot_take(s->pair, s->side, (int)arg);

		return nfd < 0 ? fail(-nfd) : nfd;
	}
	case F_GETFL:
		return O_RDWR | O_NONBLOCK;
	case F_SETFL:
	case F_GETFD:
	case F_SETFD:
		return 0;
	default:
		return fail(EINVAL);
	}
}

NOCOV int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct ms_slot *s = slot_of(fd);

	if (!s)
		return __real_epoll_ctl(epfd, op, fd, ev);
	switch (op) {
	case EPOLL_CTL_ADD:
		if (s->epfd == epfd)
			return fail(EEXIST);
		s->epfd = epfd;
		return 0;
	case EPOLL_CTL_MOD:
		return s->epfd == epfd ? 0 : fail(ENOENT);
	case EPOLL_CTL_DEL:
		if (s->epfd != epfd)
			return fail(ENOENT);
		s->epfd = -1;
		return 0;
	default:
		return fail(EINVAL);
	}
}

NOCOV int __wrap_socketpair(int domain, int type, int proto, int sv[2])
{
	struct ms_pair *pair;
	int a, b;

	if (!mp_memsock_on || domain != AF_UNIX ||
	    (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != SOCK_STREAM)
		return __real_socketpair(domain, type, proto, sv);
	for (pair = pairs; pair < pairs + MP_MEMSOCK_PAIRS; pair++)
		if (!pair->used)
			break;
	if (pair == pairs + MP_MEMSOCK_PAIRS)
		return fail(EMFILE);
	memset(pair, 0, sizeof(*pair));
	pair->used = 1;
	pair->e[0].buf = bufs[pair - pairs][0];
	pair->e[1].buf = bufs[pair - pairs][1];
	a = slot_take(pair, 0, 0);
	if (a < 0) {
		pair->used = 0;
		return fail(EMFILE);
	}
	b = slot_take(pair, 1, 0);
	if (b < 0) {
		ms_close(&fds[a - MP_MEMSOCK_FD0]);
		return fail(EMFILE);
	}
	sv[0] = a;
	sv[1] = b;
	return 0;
}

/* An unnamed AF_UNIX address, as a socketpair's ends have. */
NOCOV static int unnamed(struct sockaddr *sa, socklen_t *len)
{
	sa_family_t fam = AF_UNIX;

	if (*len >= sizeof(fam))
		memcpy(sa, &fam, sizeof(fam));
	*len = sizeof(fam);
	return 0;
}

NOCOV int __wrap_getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	if (!slot_of(fd))
		return __real_getpeername(fd, sa, len);
	return unnamed(sa, len);
}

NOCOV int __wrap_getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
	if (!slot_of(fd))
		return __real_getsockname(fd, sa, len);
	return unnamed(sa, len);
}
