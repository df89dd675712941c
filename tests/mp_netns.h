/*
 * mp_netns — several "hosts" on one machine for multi-host tests.
 *
 * Each host is a network namespace with its own address on a shared
 * bridge (itself in a "switch" namespace), and each process that enters a
 * host also gets a private mount namespace with a fresh tmpfs on /dev/shm:
 * separate hosts see separate /dev/shm, as real hosts would.  Needs root
 * and iproute2; mp_netns_available() says whether the machine can do it
 * (tests exit 77 otherwise).  Everything made is removed by
 * mp_netns_teardown(), which the harness also runs at exit and on the
 * watchdog.
 */
#ifndef MP_NETNS_H
#define MP_NETNS_H

#define MP_NETNS_MAX_HOSTS 4

struct mp_netns {
	int  nhosts;
	char sw[32];                          /* switch namespace */
	char host[MP_NETNS_MAX_HOSTS][32];    /* host namespaces */
	char addr[MP_NETNS_MAX_HOSTS][16];    /* host i's IPv4 address */
};

/* 1 when namespaces can be made here (root, ip, unshare); else 0 and a
 * reason on stderr. */
int mp_netns_available(void);

/* Make nhosts hosts (2..MP_NETNS_MAX_HOSTS).  0 or -1 (nothing left). */
int mp_netns_setup(struct mp_netns *net, int nhosts);

/* Remove every namespace made by setup.  Idempotent. */
void mp_netns_teardown(struct mp_netns *net);

/* In a child process: become a process of host i (network namespace and
 * a private /dev/shm).  0 or -errno. */
int mp_netns_enter(const struct mp_netns *net, int host);

/* Take host i's link down (up = 0: packets to and from it are dropped,
 * no reset is sent) or bring it back up.  0 or -1. */
int mp_netns_link(const struct mp_netns *net, int host, int up);

#endif
