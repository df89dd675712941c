/*
 * mp_sock — TCP socket helpers with deadlines (see mp_sock.h).
 *
 * Invariant: every descriptor returned is O_NONBLOCK | O_CLOEXEC, so no
 * library call can block past its deadline in the kernel and no exec'd
 * program inherits a messip connection (which would keep a registration
 * alive after its owner died).  The one exception is explicit:
 * mp_sock_blocking_reads() makes reads wait, but never longer than a
 * receive timeout set first.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_sock.h"
#include "mp_time.h"

#define KEEPALIVE_IDLE_S  2
#define KEEPALIVE_INTVL_S 1
#define KEEPALIVE_CNT	  3
#define USER_TIMEOUT_MS	  5000

static int parse_port(const char *s, int *port)
{
	char *end;
	long v;

	if (!*s)
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v <= 0 || v > 65535)
		return -EINVAL;
	*port = (int)v;
	return 0;
}

int mp_sock_parse_ref(const char *ref, char *host, size_t hostsz, int *port)
{
	const char *colon, *hend;
	size_t n;

	if (!ref || !*ref)
		return -EINVAL;
	if (ref[0] == '[') {
		hend = strchr(ref, ']');
		if (!hend || hend == ref + 1)
			return -EINVAL;
		n = (size_t)(hend - ref - 1);
		if (n >= hostsz)
			return -EINVAL;
		memcpy(host, ref + 1, n);
		host[n] = '\0';
		if (hend[1] == '\0')
			return 0;
		if (hend[1] != ':')
			return -EINVAL;
		return parse_port(hend + 2, port);
	}
	colon = strchr(ref, ':');
	if (colon && strchr(colon + 1, ':')) {
		/* Several colons: a bare IPv6 address, no port. */
		colon = NULL;
	}
	n = colon ? (size_t)(colon - ref) : strlen(ref);
	if (n == 0 || n >= hostsz)
		return -EINVAL;
	memcpy(host, ref, n);
	host[n] = '\0';
	return colon ? parse_port(colon + 1, port) : 0;
}

int mp_sock_resolve(const char *host, int port, struct sockaddr_storage *sa,
		    socklen_t *salen, int max)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_ADDRCONFIG};
	struct addrinfo *res = NULL;
	char serv[16];
	int n = 0;

	snprintf(serv, sizeof(serv), "%d", port);
	if (getaddrinfo(host, serv, &hints, &res) != 0 || !res) {
		/* AI_ADDRCONFIG hides loopback-only hosts on a machine
		 * without another address: retry without it. */
		hints.ai_flags = 0;
		if (getaddrinfo(host, serv, &hints, &res) != 0 || !res)
			return -EINVAL;
	}
	for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(*sa))
			continue;
		memcpy(&sa[n], ai->ai_addr, ai->ai_addrlen);
		salen[n++] = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	return n ? n : -EINVAL;
}

int mp_sock_parse_addr(const char *addr, struct sockaddr_storage *sa,
		       socklen_t *salen)
{
	char host[MP_SOCK_ADDR_MAX];
	int port = 0;

	if (mp_sock_parse_ref(addr, host, sizeof(host), &port) < 0 || !port)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -EINVAL;
		*salen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)sa;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -EINVAL;
		*salen = sizeof(*s4);
	}
	return 0;
}

int mp_sock_format_addr(const struct sockaddr *sa, char *out, size_t outsz)
{
	char ip[INET6_ADDRSTRLEN];
	int n;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		if (!inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip)))
			return -EINVAL;
		n = snprintf(out, outsz, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		if (!inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip)))
			return -EINVAL;
		n = snprintf(out, outsz, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		return -EINVAL;
	}
	return (n < 0 || (size_t)n >= outsz) ? -EINVAL : 0;
}

/* Is fd's local address a loopback one (so is its peer's, then)? */
static bool on_loopback(int fd)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);

	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return false;
	if (sa.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&sa)->sin_addr.s_addr) >>
			24) == 127;
	if (sa.ss_family == AF_INET6) {
		const struct in6_addr *a =
			&((struct sockaddr_in6 *)&sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

int mp_sock_tune(int fd)
{
	int one = 1, v;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	/* Both ends on this host (and network namespace): a peer that dies
	 * has its sockets closed by the kernel, and the kernel acknowledges
	 * everything, so keepalive and the user timeout could never fire.
	 * Skipping them saves five system calls per connection. */
	if (on_loopback(fd))
		return 0;
	/* Dead-peer detection; failures leave the defaults, which still
	 * detect a dead peer, only later. */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	v = KEEPALIVE_IDLE_S;
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v));
	v = KEEPALIVE_INTVL_S;
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof(v));
	v = KEEPALIVE_CNT;
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof(v));
	v = USER_TIMEOUT_MS;
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v));
	return 0;
}

bool mp_sock_hung_up(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};

	return poll(&p, 1, 0) > 0 &&
	       (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

int mp_sock_wait(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};

	for (;;) {
		int rc = poll(&p, 1, mp_time_left_ms(deadline));

		if (rc > 0)
			return p.revents;
		if (rc == 0) {
			if (mp_time_now_ns() >= deadline)
				return 0;
			continue; /* rounding: poll woke a hair early */
		}
		if (errno != EINTR)
			return -errno;
	}
}

int mp_sock_connect(const struct sockaddr *sa, socklen_t salen,
		    int64_t deadline)
{
	int fd, rc, err = 0;
	socklen_t elen = sizeof(err);

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	if (connect(fd, sa, salen) < 0) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			goto fail;
		}
		rc = mp_sock_wait(fd, POLLOUT, deadline);
		if (rc == 0) {
			rc = -ETIMEDOUT;
			goto fail;
		}
		if (rc < 0)
			goto fail;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) {
			rc = -errno;
			goto fail;
		}
		if (err) {
			rc = -err;
			goto fail;
		}
	}
	rc = mp_sock_tune(fd);
	if (rc < 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return rc;
}

int mp_sock_connect_start(const struct sockaddr *sa, socklen_t salen, int *fdp)
{
	int fd, rc;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	if (connect(fd, sa, salen) == 0) {
		rc = mp_sock_tune(fd);
		if (rc < 0) {
			close(fd);
			return rc;
		}
		*fdp = fd;
		return 0;
	}
	if (errno == EINPROGRESS) {
		*fdp = fd;
		return 1;
	}
	rc = -errno;
	close(fd);
	return rc;
}

int mp_sock_connect_finish(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	socklen_t elen;
	int err = 0;

	if (poll(&p, 1, 0) <= 0)
		return -EINPROGRESS; /* not yet (or EINTR: ask again) */
	elen = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		return -errno;
	if (err)
		return -err;
	return mp_sock_tune(fd);
}

int mp_sock_listen_local(int ref_fd, char *addr, size_t addrsz)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	int fd, rc;

	if (getsockname(ref_fd, (struct sockaddr *)&sa, &len) < 0)
		return -errno;
	if (sa.ss_family == AF_INET)
		((struct sockaddr_in *)&sa)->sin_port = 0;
	else if (sa.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&sa)->sin6_port = 0;
	else
		return -EAFNOSUPPORT;
	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 128) < 0)
		goto fail_errno;
	len = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		goto fail_errno;
	rc = mp_sock_format_addr((struct sockaddr *)&sa, addr, addrsz);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
fail_errno:
	rc = -errno;
	close(fd);
	return rc;
}

int mp_sock_blocking_reads(int fd, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	int fl;

	/* The timeout first: a blocking read never waits without bound. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int mp_sock_accept(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return (errno == EWOULDBLOCK) ? -EAGAIN : -errno;
	if (mp_sock_tune(fd) < 0) {
		close(fd);
		return -EAGAIN; /* the peer vanished already */
	}
	return fd;
}

/*
 * The spin budget, computed once per process: -1 not yet known.  Racing
 * threads compute the same value, so a relaxed store publishes nothing
 * but the number itself.
 */
static int64_t spin_ns_global = -1;

static int64_t spin_ns_compute(void)
{
	const char *env = getenv("MESSIP_SPIN_US");
	cpu_set_t set;
	long us;

	if (!env || !*env) {
		if (sched_getaffinity(0, sizeof(set), &set) == 0 &&
		    CPU_COUNT(&set) < 2)
			return 0;
		return MP_SPIN_NS;
	}
	us = strtol(env, NULL, 10);
	if (us <= 0)
		return 0;
	return us > 1000 ? 1000000 : us * 1000;
}

int64_t mp_spin_budget(struct mp_spin *sp, int64_t deadline)
{
	int64_t ns = __atomic_load_n(&spin_ns_global, __ATOMIC_RELAXED);
	int64_t left;

	if (ns < 0) {
		ns = spin_ns_compute();
		__atomic_store_n(&spin_ns_global, ns, __ATOMIC_RELAXED);
	}
	if (ns == 0)
		return 0;
	if (sp->skip) {
		sp->skip--;
		return 0;
	}
	if (deadline != MP_TIME_FOREVER) {
		left = deadline - mp_time_now_ns();
		if (left <= 0)
			return 0;
		if (left < ns)
			ns = left;
	}
	return ns;
}

void mp_spin_done(struct mp_spin *sp, bool hit)
{
	if (hit) {
		sp->backoff = 0;
		return;
	}
	sp->backoff = sp->backoff ? sp->backoff * 2 : 1;
	if (sp->backoff > MP_SPIN_SKIP_MAX)
		sp->backoff = MP_SPIN_SKIP_MAX;
	sp->skip = sp->backoff;
}

void mp_spin_pause(void)
{
	/* Without it, a peer that the scheduler placed on our CPU would wait
	 * for the spin to end; with nothing else to run it returns at once. */
	sched_yield();
}

bool mp_spin_again(struct mp_spin *sp, struct mp_spin_wait *w, int64_t deadline)
{
	int64_t t0;

	if (w->slept)
		return false;
	if (!w->started) {
		int64_t budget = mp_spin_budget(sp, deadline);

		w->started = true;
		w->on = budget > 0;
		if (!w->on)
			return false; /* no clock read for no spin */
		w->end = mp_time_now_ns() + budget;
		/* Pause before the first poll too: the caller just sent its
		 * request, so the answer is not there yet (a poll now would
		 * be a wasted system call), and a peer sharing our CPU gets
		 * to run at once. */
	}
	if (!w->on || w->contended)
		return false;
	t0 = mp_time_now_ns();
	if (t0 >= w->end)
		return false;
	mp_spin_pause();
	/* A pause that took long means another task ran on this CPU: the
	 * peer (it then runs here anyway, and spinning gains nothing) or
	 * some other load (spinning then only hands it our CPU).  Either
	 * way, stop and let the policy back off. */
	if (mp_time_now_ns() - t0 > MP_SPIN_PAUSE_MAX_NS) {
		w->contended = true;
		return false;
	}
	return true;
}

void mp_spin_end(struct mp_spin *sp, const struct mp_spin_wait *w, bool got)
{
	if (w->on)
		mp_spin_done(sp, got && !w->slept && !w->contended);
}
