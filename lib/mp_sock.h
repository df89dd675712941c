/*
 * mp_sock — TCP socket helpers with deadlines.
 *
 * Every socket made here is non-blocking (unless mp_sock_blocking_reads()
 * is applied to it) and close-on-exec, and tuned the
 * same way (mp_sock_tune): TCP_NODELAY, SO_KEEPALIVE with idle 2 s,
 * interval 1 s and 3 probes, and TCP_USER_TIMEOUT 5000 ms, so that a peer
 * whose host vanished is noticed within 10 s even while nothing is sent
 * (on a loopback address only TCP_NODELAY: both ends are on this host).
 * Waits take an absolute deadline (mp_time.h), never a relative timeout,
 * so a call that waits several times still honours one deadline.
 *
 * Addresses on the wire are text: "a.b.c.d:port" or "[v6]:port".
 */
#ifndef MP_SOCK_H
#define MP_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MP_SOCK_HOST_MAX 256
#define MP_SOCK_ADDR_MAX 64 /* "[v6]:port" with NUL */

/*
 * Split "host", "host:port", "[v6]" or "[v6]:port" (a bare v6 address
 * with several colons is a host).  *port is left untouched when the
 * reference names none.  0, or -EINVAL (empty host, bad port, too long).
 */
int mp_sock_parse_ref(const char *ref, char *host, size_t hostsz, int *port);

/* Resolve host and port: up to max TCP addresses into sa[] / salen[], in
 * getaddrinfo's order.  The count (> 0), or -EINVAL (no such host). */
int mp_sock_resolve(const char *host, int port, struct sockaddr_storage *sa,
		    socklen_t *salen, int max);

/* Parse a numeric "ip:port" / "[v6]:port" as found on the wire.  0 or
 * -EINVAL. */
int mp_sock_parse_addr(const char *addr, struct sockaddr_storage *sa,
		       socklen_t *salen);

/* Format sa as "ip:port"; 0 or -EINVAL. */
int mp_sock_format_addr(const struct sockaddr *sa, char *out, size_t outsz);

/* Connect a tuned non-blocking TCP socket before deadline.  fd, or
 * -ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH, ... */
int mp_sock_connect(const struct sockaddr *sa, socklen_t salen,
		    int64_t deadline);

/*
 * Non-blocking connect in two steps, for callers that must not wait:
 * start returns the fd in *fdp and 0 (connected) or 1 (in progress), or
 * -errno; finish returns 0 (connected and tuned), -EINPROGRESS (not yet)
 * or the connect's -errno.
 */
int mp_sock_connect_start(const struct sockaddr *sa, socklen_t salen, int *fdp);
int mp_sock_connect_finish(int fd);

/* Apply the options above to a connected socket.  0 or -errno (only a
 * failure of TCP_NODELAY is reported; the rest are best effort). */
int mp_sock_tune(int fd);

/*
 * Listening socket on the local address of the connected socket ref_fd,
 * any port; its address as text in addr.  fd or -errno.
 */
int mp_sock_listen_local(int ref_fd, char *addr, size_t addrsz);

/*
 * Make fd's reads able to block, each for at most timeout_ms (SO_RCVTIMEO):
 * for a link that waits in recv() rather than in poll() then recv(), one
 * system call less per wait.  Every other read and write on it must pass
 * MSG_DONTWAIT (mp_link does).  0 or -errno (fd is then unchanged or at
 * worst still non-blocking with the timeout set).
 */
int mp_sock_blocking_reads(int fd, int timeout_ms);

/* Accept one connection, tuned; fd, -EAGAIN when none, or -errno. */
int mp_sock_accept(int lfd);

/* Has the peer closed its end (or the connection failed)?  Never
 * blocks.  A write to such a socket would still succeed locally. */
bool mp_sock_hung_up(int fd);

/* poll() one fd for events until deadline: revents (> 0), 0 on timeout,
 * or -errno (EINTR is retried). */
int mp_sock_wait(int fd, short events, int64_t deadline);

/*
 * Adaptive busy-poll before sleeping.  Going to sleep in poll/epoll and
 * being woken costs tens of microseconds on each side of a round trip;
 * when the peer answers within a few tens of microseconds, polling
 * without sleeping (with a sched_yield before each poll, so that a peer
 * sharing this CPU runs at once) is cheaper.  A waiter keeps one struct
 * mp_spin, zeroed at start, and for each wait:
 *
 *     budget = mp_spin_budget(&sp, deadline);   (0: do not spin)
 *     ... poll without blocking and mp_spin_pause() until something
 *     arrives or budget ns have passed ...
 *     mp_spin_done(&sp, arrived);
 *
 * A spin that ends empty-handed backs off: the next 1, 2, 4, ... up to
 * MP_SPIN_SKIP_MAX waits sleep at once, so a peer that answers slowly
 * costs at most one wasted spin per MP_SPIN_SKIP_MAX waits.  By default
 * the budget is MP_SPIN_NS, and spinning is off for a process allowed on
 * a single CPU (its peer could mostly run only once it stops).  The
 * environment variable MESSIP_SPIN_US, read once, overrides both: 0
 * turns spinning off, n > 0 spins up to n microseconds (at most 1000).
 */
#define MP_SPIN_NS	     50000
#define MP_SPIN_SKIP_MAX     256
#define MP_SPIN_PAUSE_MAX_NS 5000 /* longer: another task had the CPU */

struct mp_spin {
	uint16_t skip;	  /* waits left that do not spin */
	uint16_t backoff; /* skip after the next miss (0: none yet) */
};

int64_t mp_spin_budget(struct mp_spin *sp, int64_t deadline);
void mp_spin_done(struct mp_spin *sp, bool hit);
void mp_spin_pause(void);

/*
 * The same for a wait that polls one thing in a loop:
 *
 *     struct mp_spin_wait w = {0};
 *     got = false;
 *     while (!got && mp_spin_again(&sp, &w, deadline))
 *             got = poll_once();
 *     if (!got) { w.slept = true; ...sleep, poll again... }
 *     mp_spin_end(&sp, &w, got);
 *
 * mp_spin_again() asks for the budget on its first call; every call
 * then pauses (mp_spin_pause) and says whether the budget allows one more
 * poll.  A pause during which another task ran (it took longer than
 * MP_SPIN_PAUSE_MAX_NS) ends the spin and counts as a miss: the CPU is
 * shared with the peer (which then runs as soon as we sleep, so spinning
 * gains nothing) or with other load (which spinning would only feed).
 */
struct mp_spin_wait {
	int64_t end;	/* spinning allowed until then */
	bool started;	/* the budget was asked for */
	bool on;	/* ... and was not 0 */
	bool slept;	/* the caller went to sleep: the spin fell short */
	bool contended; /* a pause let another task run: spin no more */
};

bool mp_spin_again(struct mp_spin *sp, struct mp_spin_wait *w,
		   int64_t deadline);
void mp_spin_end(struct mp_spin *sp, const struct mp_spin_wait *w, bool got);

#endif
