/*
 * mgr_net — socket helpers for the manager: address parsing, the shared
 * listening socket, accepted-connection set-up (latency and dead-peer
 * detection), peer names for logs.
 *
 * Addresses are "host:port" with a numeric IPv4 host, "[v6]:port",
 * "localhost:port" or "*:port" (any address).  Nothing here resolves
 * names through DNS.
 */
#ifndef MGR_NET_H
#define MGR_NET_H

#include <stddef.h>
#include <sys/socket.h>

struct mgr_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* Parse text into *a.  0, or -EINVAL (syntax, host or port out of range;
 * port 0 is refused). */
int mgr_net_parse_addr(const char *text, struct mgr_addr *a);

/* 1 if a is a loopback address (127/8 or ::1), else 0. */
int mgr_net_is_loopback(const struct mgr_addr *a);

/* Port of a (host order). */
unsigned mgr_net_port(const struct mgr_addr *a);

/* Replace the port of a. */
void mgr_net_set_port(struct mgr_addr *a, unsigned port);

/*
 * Create a non-blocking listening TCP socket bound to a (SO_REUSEADDR, not
 * SO_REUSEPORT: a second manager on the same port must fail to bind).
 * Returns the fd, or -EADDRINUSE (someone listens there), -EACCES, or
 * another -errno.
 */
int mgr_net_listen(const struct mgr_addr *a, int backlog);

/* Accept one connection from lfd: non-blocking, close-on-exec, with
 * TCP_NODELAY and mgr_net_keepalive().  fd, -EAGAIN (none pending), or
 * another -errno. */
int mgr_net_accept(int lfd, char *peer, size_t peerlen);

/*
 * Dead-peer detection on a connection, as doc/protocol.md fixes it for
 * both ends (lib/mp_sock.c does the same on the library's side): keepalive
 * probes after MGR_KEEPIDLE_S idle, every MGR_KEEPINTVL_S, MGR_KEEPCNT of
 * them, and TCP_USER_TIMEOUT for unacknowledged data.  A vanished peer is
 * noticed within about 10 s.  Best effort: errors are ignored.
 */
#define MGR_KEEPIDLE_S      2
#define MGR_KEEPINTVL_S     1
#define MGR_KEEPCNT         3
#define MGR_USER_TIMEOUT_MS 5000
void mgr_net_keepalive(int fd);

/* "ip:port" of a into buf (always NUL-terminated). */
void mgr_net_format(const struct mgr_addr *a, char *buf, size_t len);

#endif
