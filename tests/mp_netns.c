/*
 * mp_netns — network namespaces as test hosts (see mp_netns.h).
 *
 * Topology: namespace <sw> holds a bridge "br0"; host i's namespace holds
 * "eth0" (10.213.0.(i+1)/24), a veth whose peer "p<i>" is in the bridge.
 * Taking "p<i>" down in the switch cuts host i off silently, like a pulled
 * cable: no RST, no FIN, so only timeouts and keepalives notice.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "mp_netns.h"
#include "mp_test.h"

static struct mp_netns *registered;

static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "mp_netns: failed (%d): %s\n", rc, cmd);
	return rc == 0 ? 0 : -1;
}

int mp_netns_available(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "SKIP: network namespaces need root\n");
		return 0;
	}
	if (system("ip netns list >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: iproute2 (ip netns) not usable\n");
		return 0;
	}
	return 1;
}

static void cleanup_registered(void)
{
	if (registered)
		mp_netns_teardown(registered);
}

void mp_netns_teardown(struct mp_netns *net)
{
	for (int i = 0; i < net->nhosts; i++)
		if (net->host[i][0]) {
			sh("ip netns del %s 2>/dev/null", net->host[i]);
			net->host[i][0] = '\0';
		}
	if (net->sw[0]) {
		sh("ip netns del %s 2>/dev/null", net->sw);
		net->sw[0] = '\0';
	}
	net->nhosts = 0;
	if (registered == net)
		registered = NULL;
}

int mp_netns_setup(struct mp_netns *net, int nhosts)
{
	long id = (long)getpid();

	if (nhosts < 2 || nhosts > MP_NETNS_MAX_HOSTS)
		return -1;
	memset(net, 0, sizeof(*net));
	registered = net;
	mp_test_on_cleanup(cleanup_registered);
	snprintf(net->sw, sizeof(net->sw), "mpt%ldsw", id);
	if (sh("ip netns add %s", net->sw) ||
	    sh("ip -n %s link add br0 type bridge", net->sw) ||
	    sh("ip -n %s link set br0 up", net->sw))
		goto fail;
	net->nhosts = nhosts;
	for (int i = 0; i < nhosts; i++) {
		snprintf(net->host[i], sizeof(net->host[i]), "mpt%ldh%d", id, i);
		snprintf(net->addr[i], sizeof(net->addr[i]), "10.213.0.%d", i + 1);
		if (sh("ip netns add %s", net->host[i]) ||
		    sh("ip link add mpt%ldv%d type veth peer name mpt%ldp%d", id, i, id, i) ||
		    sh("ip link set mpt%ldv%d netns %s name eth0", id, i, net->host[i]) ||
		    sh("ip link set mpt%ldp%d netns %s name p%d", id, i, net->sw, i) ||
		    sh("ip -n %s link set p%d master br0 up", net->sw, i) ||
		    sh("ip -n %s addr add %s/24 dev eth0", net->host[i], net->addr[i]) ||
		    sh("ip -n %s link set eth0 up", net->host[i]) ||
		    sh("ip -n %s link set lo up", net->host[i]))
			goto fail;
	}
	return 0;
fail:
	mp_netns_teardown(net);
	return -1;
}

int mp_netns_enter(const struct mp_netns *net, int host)
{
	char path[128];
	int fd;

	if (host < 0 || host >= net->nhosts)
		return -EINVAL;
	snprintf(path, sizeof(path), "/run/netns/%s", net->host[host]);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (setns(fd, CLONE_NEWNET) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	close(fd);
	/* A private /dev/shm: this "host" shares no shared memory with the
	 * others, so the same-host fast path must not be chosen. */
	if (unshare(CLONE_NEWNS) < 0)
		return -errno;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
		  "mode=1777,size=268435456") < 0)
		return -errno;
	return 0;
}

int mp_netns_link(const struct mp_netns *net, int host, int up)
{
	if (host < 0 || host >= net->nhosts)
		return -1;
	return sh("ip -n %s link set p%d %s", net->sw, host, up ? "up" : "down");
}
