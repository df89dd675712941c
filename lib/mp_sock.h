/*
 * mp_sock — TCP socket helpers with deadlines.
 *
 * Every socket made here is non-blocking and close-on-exec, and tuned the
 * same way (mp_sock_tune): TCP_NODELAY, SO_KEEPALIVE with idle 2 s,
 * interval 1 s and 3 probes, and TCP_USER_TIMEOUT 5000 ms, so that a peer
 * whose host vanished is noticed within 10 s even while nothing is sent.
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

/* Accept one connection, tuned; fd, -EAGAIN when none, or -errno. */
int mp_sock_accept(int lfd);

/* Has the peer closed its end (or the connection failed)?  Never
 * blocks.  A write to such a socket would still succeed locally. */
bool mp_sock_hung_up(int fd);

/* poll() one fd for events until deadline: revents (> 0), 0 on timeout,
 * or -errno (EINTR is retried). */
int mp_sock_wait(int fd, short events, int64_t deadline);

#endif
