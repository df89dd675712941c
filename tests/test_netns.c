/*
 * test_netns — the multi-host test bed itself: three namespaces reach each
 * other over TCP, do not share /dev/shm, and a link taken down drops
 * traffic silently.  Skips (77) without root.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_netns.h"
#include "mp_test.h"

static struct mp_netns net;

static int listen_on(const char *ip, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	inet_pton(AF_INET, ip, &sa.sin_addr);
	sa.sin_port = htons((uint16_t)port);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0)
		return -1;
	return fd;
}

static int connect_to(const char *ip, int port, int timeout_s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = timeout_s };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	inet_pton(AF_INET, ip, &sa.sin_addr);
	sa.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Host 0 serves one byte echo; host 2 connects to it by address. */
static void test_hosts_reach_each_other(void)
{
	int pipefd[2];
	pid_t srv, cli;
	char c;

	CU_ASSERT_FATAL(pipe(pipefd) == 0);
	srv = mp_test_fork();
	if (srv == 0) {
		int fd, l;

		if (mp_netns_enter(&net, 0) < 0 || (l = listen_on(net.addr[0], 7000)) < 0)
			_exit(1);
		if (write(pipefd[1], "r", 1) != 1)
			_exit(1);
		fd = accept(l, NULL, NULL);
		if (fd < 0 || read(fd, &c, 1) != 1 || write(fd, &c, 1) != 1)
			_exit(1);
		_exit(0);
	}
	CU_ASSERT_FATAL(read(pipefd[0], &c, 1) == 1);
	cli = mp_test_fork();
	if (cli == 0) {
		int fd;

		if (mp_netns_enter(&net, 2) < 0)
			_exit(1);
		fd = connect_to(net.addr[0], 7000, 5);
		if (fd < 0 || write(fd, "x", 1) != 1 || read(fd, &c, 1) != 1 || c != 'x')
			_exit(1);
		/* Loopback in this host does not reach host 0's server. */
		_exit(connect_to("127.0.0.1", 7000, 1) < 0 ? 0 : 2);
	}
	CU_ASSERT(mp_test_wait(cli, 10000) == 0);
	CU_ASSERT(mp_test_wait(srv, 10000) == 0);
	close(pipefd[0]);
	close(pipefd[1]);
}

/* An object made in one host's /dev/shm is invisible from another. */
static void test_private_dev_shm(void)
{
	pid_t a = mp_test_fork();

	if (a == 0) {
		int fd;

		if (mp_netns_enter(&net, 1) < 0)
			_exit(1);
		fd = shm_open("/messip-netns-probe", O_CREAT | O_RDWR, 0600);
		if (fd < 0)
			_exit(2);
		/* Ours is visible here... */
		if (shm_open("/messip-netns-probe", O_RDWR, 0) < 0)
			_exit(3);
		_exit(0); /* the tmpfs goes with the mount namespace */
	}
	CU_ASSERT(mp_test_wait(a, 10000) == 0);
	/* ...and not in the root namespace's /dev/shm. */
	CU_ASSERT(shm_open("/messip-netns-probe", O_RDWR, 0) < 0 && errno == ENOENT);
}

/* With host 2's link down, a connection attempt from it gets no answer
 * (no RST): the connect times out rather than being refused. */
static void test_link_down_drops_silently(void)
{
	pid_t cli;
	int status;

	CU_ASSERT_FATAL(mp_netns_link(&net, 2, 0) == 0);
	cli = mp_test_fork();
	if (cli == 0) {
		if (mp_netns_enter(&net, 2) < 0)
			_exit(1);
		if (connect_to(net.addr[0], 7001, 1) >= 0)
			_exit(2);
		_exit(errno == EINPROGRESS || errno == ETIMEDOUT || errno == EAGAIN ? 0 : 3);
	}
	status = mp_test_wait(cli, 10000);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CU_ASSERT(mp_netns_link(&net, 2, 1) == 0);
}

static const struct mp_test_case tests[] = {
	{ "hosts reach each other by address, not by loopback", test_hosts_reach_each_other },
	{ "each host has its own /dev/shm", test_private_dev_shm },
	{ "link down drops packets without a reset", test_link_down_drops_silently },
	MP_TEST_END
};

int main(void)
{
	int rc;

	mp_test_init("test_netns", 60);
	if (!mp_netns_available())
		return 77;
	if (mp_netns_setup(&net, 3) < 0)
		return 1;
	rc = mp_test_main("netns", tests);
	mp_netns_teardown(&net);
	return rc;
}
