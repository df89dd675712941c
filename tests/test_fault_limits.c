/*
 * test_fault_limits — running out of things:
 *
 *   - more library connections than the manager's max_connections: the
 *     extra one fails at once with an error (not a hang), the others keep
 *     working, and a place freed is usable again;
 *   - a server whose descriptors run out (RLIMIT_NOFILE lowered): clients
 *     it cannot accept wait, it does not die, the clients it has keep
 *     being served, it does not busy-loop meanwhile (CPU time bound), and
 *     the waiting ones are served once descriptors are free again;
 *   - the manager's descriptors run out: the same from the manager's side;
 *   - the manager's ring memory (ring_memory) and channel table
 *     (max_channels) full: channel_create fails with ENOSPC, existing
 *     channels work, a deleted channel's room is reused;
 *   - /dev/shm full (root: a tiny private tmpfs): the manager refuses to
 *     start with a message instead of dying of SIGBUS later, and a server
 *     library whose /dev/shm is full still creates its channel and serves
 *     over TCP (or says ENOSPC).
 *
 * Covered elsewhere: a buffered queue (ring) full, back-pressure and
 * timeouts (test_api_buffered, test_mgr_proto "ring full"), the raw
 * protocol side of max_connections (test_mgr_proto).
 */
#define _GNU_SOURCE
#include "config.h"

#include <sched.h>
#include <sys/mount.h>

#include "test_fault_util.h"

/* CPU time (ms) a process waiting for a descriptor may use in 1 s. */
#define SPIN_MS 300

/* ---- too many connections ----------------------------------------------- */

static void test_too_many_connections(void)
{
	enum { MAXC = 4 };
	struct mp_mgrproc m;
	messip_cnx_t *c[MAXC], *extra = NULL;
	messip_channel_t *srv, *cl;
	int32_t type = 0;
	int64_t t0, dt;
	char buf[8];
	int err;

	CU_ASSERT_FATAL(fault_mgr_start_on(&m, 0, 2, "max_connections 4\n") ==
			0);
	for (int i = 0; i < MAXC; i++) {
		c[i] = messip_connect(m.ref, "lim", 2000);
		CU_ASSERT_FATAL(c[i] != NULL);
	}
	srv = messip_channel_create(c[0], "l-conn", 2000, 0);
	CU_ASSERT_FATAL(srv != NULL);
	t0 = api_now_ms();
	errno = 0;
	extra = messip_connect(m.ref, "extra", 3000);
	err = errno;
	dt = api_now_ms() - t0;
	CU_ASSERT_PTR_NULL(extra);
	fprintf(stderr, "  connection over max_connections: %s after %lld ms\n",
		extra ? "accepted" : strerror(err), (long long)dt);
	/* A refusal, told at once: not a timeout. */
	CU_ASSERT(err == ECONNREFUSED || err == ENOSPC || err == EACCES);
	CU_ASSERT(dt < 1000);
	if (extra)
		messip_disconnect(extra, 1000);
	/* The others keep working. */
	cl = messip_channel_connect(c[1], "l-conn", 2000);
	CU_ASSERT_FATAL(cl != NULL);
	CU_ASSERT(messip_buffered_send(cl, 5, "x", 1, 1000) >= 0);
	CU_ASSERT_EQUAL(messip_receive(srv, &type, buf, sizeof(buf), 2000),
			MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 5);
	CU_ASSERT_EQUAL(messip_death_notify(c[2], 1000, 0), 0);
	/* A place freed is taken again. */
	CU_ASSERT_EQUAL(messip_disconnect(c[3], 2000), 0);
	extra = NULL;
	for (int i = 0; i < 40 && !extra; i++) {
		extra = messip_connect(m.ref, "again", 1000);
		if (!extra)
			api_sleep_ms(50);
	}
	CU_ASSERT_PTR_NOT_NULL(extra);
	if (extra)
		CU_ASSERT_EQUAL(messip_disconnect(extra, 2000), 0);
	for (int i = 0; i < MAXC - 1; i++)
		CU_ASSERT_EQUAL(messip_disconnect(c[i], 2000), 0);
	CU_ASSERT(mp_mgrproc_stop(&m) != -1);
	CU_ASSERT(!fault_mgr_segment_left(m.port));
}

/* ---- descriptors exhausted in a server ---------------------------------- */

#define N_GOOD	3
#define N_EXTRA 3

static int highest_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int hi = 2;

	if (!d)
		return 1023;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && atoi(de->d_name) > hi)
			hi = atoi(de->d_name);
	closedir(d);
	return hi;
}

struct fd_arg {
	struct api_gate *ready;
	struct api_gate *go;
	struct fault_slot *slot;
};

/* Serves echo with room for only N_GOOD more descriptors. */
static void fd_server(void *p)
{
	static uint8_t buf[4096];
	struct fd_arg *a = p;
	messip_cnx_t *cnx = api_connect("fdsrv");
	messip_channel_t *ch;
	struct rlimit rl;
	int64_t end;
	int hi;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "l-fd", 5000, 0);
	CHILD_CHECK(ch);
	/* Descriptors are numbered from the lowest free one: fill the holes
	 * below the highest in use, then leave exactly N_GOOD above it. */
	hi = highest_fd();
	for (;;) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

		CHILD_CHECK(fd >= 0);
		if (fd > hi) {
			close(fd);
			break;
		}
	}
	rl.rlim_cur = rl.rlim_max = (rlim_t)(hi + 1 + N_GOOD);
	CHILD_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	api_gate_signal(a->ready);
	end = api_now_ms() + 40000;
	while (api_now_ms() < end) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 500);

		if (r < 0)
			continue;
		CHILD_CHECK(messip_reply(ch, r, type, buf, ch->datalenr,
					 2000) == 0);
		if (type == FAULT_T_QUIT)
			break;
	}
	messip_disconnect(cnx, 1000);
}

static void fd_good_client(void *p)
{
	struct fd_arg *a = p;
	messip_cnx_t *cnx = api_connect("good");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_connect(cnx, "l-fd", 5000);
	CHILD_CHECK(ch);
	CHILD_CHECK(fault_echo_ok(ch, 1, 100, 5000));
	api_gate_signal(a->ready);
	CHILD_CHECK(api_gate_wait(a->go, 20000));
	/* Still served while the server cannot accept anyone else. */
	CHILD_CHECK(fault_echo_ok(ch, 2, 1000, 5000));
	CHILD_CHECK(messip_channel_disconnect(ch, 2000) == MESSIP_OK);
	messip_disconnect(cnx, 2000);
}

static void fd_extra_client(void *p)
{
	struct fd_arg *a = p;
	messip_cnx_t *cnx = api_connect("extra");
	messip_channel_t *ch;
	int ok;

	CHILD_CHECK(cnx);
	ch = messip_channel_connect(cnx, "l-fd", 5000);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	errno = 0;
	ok = fault_echo_ok(ch, 3, 100, 10000);
	fault_slot_set(a->slot, ok, errno);
	messip_disconnect(cnx, 2000);
}

static void test_server_out_of_fds(void)
{
	struct api_gate ready, go;
	struct fault_slot *slot = fault_slots(N_EXTRA);
	struct fd_arg fa = {&ready, &go, NULL};
	struct fd_arg ea[N_EXTRA];
	struct fault_srv_report rep;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pid_t srv, good[N_GOOD], extra[N_EXTRA];
	int64_t t_go;
	long c0, c1;
	int served = 0;

	/* Same-host clients on shared memory need no accepted socket to be
	 * served: this is about the TCP path. */
	fault_tcp_only(1);
	api_gate_init(&ready);
	api_gate_init(&go);
	srv = api_fork(fd_server, &fa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	for (int i = 0; i < N_GOOD; i++)
		good[i] = api_fork(fd_good_client, &fa);
	for (int i = 0; i < N_GOOD; i++)
		CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	for (int i = 0; i < N_EXTRA; i++) {
		ea[i] = fa;
		ea[i].slot = &slot[i];
		extra[i] = api_fork(fd_extra_client, &ea[i]);
	}
	for (int i = 0; i < N_EXTRA; i++)
		CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	api_sleep_ms(300); /* their connections wait to be accepted */
	c0 = fault_cpu_ms(srv);
	api_sleep_ms(1000);
	c1 = fault_cpu_ms(srv);
	fprintf(stderr,
		"  server out of descriptors: %ld ms CPU in 1 s, alive %d\n",
		c1 - c0, kill(srv, 0) == 0);
	/* Waiting for a descriptor is not a busy loop (mp_srv.c: the
	 * listening socket goes edge-triggered and is retried every
	 * 100 ms). */
	CU_ASSERT(c0 >= 0 && c1 >= c0 && c1 - c0 < SPIN_MS);
	CU_ASSERT_EQUAL(waitpid(srv, NULL, WNOHANG), 0); /* still there */
	/* The clients it has are still served. */
	t_go = api_now_ms();
	for (int i = 0; i < N_GOOD; i++)
		api_gate_signal(&go);
	for (int i = 0; i < N_GOOD; i++)
		CU_ASSERT(api_child_ok(good[i], 10000));
	/* Their descriptors are free: the waiting ones get in. */
	CU_ASSERT_EQUAL(fault_slots_wait(slot, N_EXTRA, 12000), N_EXTRA);
	for (int i = 0; i < N_EXTRA; i++) {
		served += slot[i].rc == 1;
		/* They really had to wait for a descriptor. */
		CU_ASSERT(slot[i].t_ms >= t_go);
	}
	fprintf(stderr,
		"  waiting clients served once descriptors freed: "
		"%d/%d\n",
		served, N_EXTRA);
	CU_ASSERT_EQUAL(served, N_EXTRA);
	for (int i = 0; i < N_EXTRA; i++)
		CU_ASSERT(api_child_ok(extra[i], 5000));
	cnx = api_connect("fdquit");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_connect(cnx, "l-fd", 2000);
	CU_ASSERT_PTR_NOT_NULL(ch);
	if (ch)
		CU_ASSERT_EQUAL(fault_quit(ch, &rep), 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	messip_disconnect(cnx, 2000);
	fault_slots_free(slot, N_EXTRA);
	api_gate_close(&ready);
	api_gate_close(&go);
	fault_tcp_only(0);
}

/* ---- descriptors exhausted in the manager ------------------------------- */

#define MGR_NOFILE 48

static void test_manager_out_of_fds(void)
{
	enum { MAXC = 100 };
	messip_cnx_t *c[MAXC];
	struct mp_mgrproc m;
	pid_t w[8];
	int n = 0, nw, err = 0, works = 0;
	int64_t t0, dt = 0;
	long c0 = 0, c1 = 0;

	fault_mgr_nofile = MGR_NOFILE;
	CU_ASSERT_FATAL(fault_mgr_start_on(&m, 0, 1, NULL) == 0);
	fault_mgr_nofile = 0;
	while (n < MAXC) {
		t0 = api_now_ms();
		errno = 0;
		c[n] = messip_connect(m.ref, "many", 1000);
		if (!c[n]) {
			err = errno;
			dt = api_now_ms() - t0;
			break;
		}
		n++;
	}
	fprintf(stderr,
		"  manager out of descriptors after %d connections: %s after "
		"%lld ms\n",
		n, strerror(err), (long long)dt);
	CU_ASSERT(n > 0 && n < MAXC);
	CU_ASSERT(err == ETIMEDOUT || err == ECONNREFUSED || err == ENOSPC ||
		  err == EACCES);
	nw = fault_children_of(m.pid, w, 8);
	CU_ASSERT_EQUAL(nw, 1);
	if (nw >= 1) {
		c0 = fault_cpu_ms(w[0]);
		api_sleep_ms(1000);
		c1 = fault_cpu_ms(w[0]);
		fprintf(stderr, "  its worker: %ld ms CPU in 1 s\n", c1 - c0);
		/* Alive; not spinning is in test_fault_known. */
		CU_ASSERT(c0 >= 0 && c1 >= c0);
	}
	/* The connections it has keep working. */
	for (int i = 0; i < n; i++)
		works += messip_death_notify(c[i], 1000, 0) == 0;
	CU_ASSERT_EQUAL(works, n);
	/* Room again once some leave. */
	for (int i = 0; i < 4 && n > 0; i++)
		CU_ASSERT_EQUAL(messip_disconnect(c[--n], 1000), 0);
	c[n] = NULL;
	for (int i = 0; i < 20 && !c[n]; i++)
		c[n] = messip_connect(m.ref, "again", 1000);
	CU_ASSERT_PTR_NOT_NULL(c[n]);
	if (c[n])
		n++;
	for (int i = 0; i < n; i++)
		messip_disconnect(c[i], 1000);
	CU_ASSERT(mp_mgrproc_stop(&m) != -1);
	fault_mgr_segment_remove(m.port);
}

/* ---- shared memory: rings and table full -------------------------------- */

static void fill_channels(const char *what, const char *conf, int max_expected)
{
	enum { MAXCH = 64 };
	messip_channel_t *ch[MAXCH];
	struct mp_mgrproc m;
	messip_cnx_t *cnx, *cli;
	messip_channel_t *c;
	int32_t type = 0;
	char name[32], buf[8];
	int n = 0, err = 0;

	CU_ASSERT_FATAL(fault_mgr_start_on(&m, 0, 1, conf) == 0);
	cnx = messip_connect(m.ref, "filler", 2000);
	CU_ASSERT_FATAL(cnx != NULL);
	while (n < MAXCH) {
		snprintf(name, sizeof(name), "l-full-%d", n);
		ch[n] = messip_channel_create(cnx, name, 2000, 0);
		if (!ch[n]) {
			err = errno;
			break;
		}
		n++;
	}
	fprintf(stderr, "  %s: %d channels, then %s\n", what, n, strerror(err));
	CU_ASSERT(n >= 1 && n <= max_expected);
	CU_ASSERT_EQUAL(err, ENOSPC);
	/* The channels made work. */
	cli = messip_connect(m.ref, "fcli", 2000);
	CU_ASSERT_FATAL(cli != NULL);
	c = messip_channel_connect(cli, "l-full-0", 2000);
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT(messip_buffered_send(c, 9, "x", 1, 1000) >= 0);
	CU_ASSERT_EQUAL(messip_receive(ch[0], &type, buf, sizeof(buf), 2000),
			MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 9);
	/* A deleted channel's room is taken again. */
	CU_ASSERT_EQUAL(messip_channel_delete(ch[n - 1], 2000), 0);
	CU_ASSERT_PTR_NOT_NULL(
		messip_channel_create(cnx, "l-full-new", 2000, 0));
	CU_ASSERT_PTR_NULL(messip_channel_create(cnx, "l-full-over", 2000, 0));
	CU_ASSERT_EQUAL(errno, ENOSPC);
	messip_disconnect(cli, 2000);
	messip_disconnect(cnx, 2000);
	CU_ASSERT(mp_mgrproc_stop(&m) != -1);
	CU_ASSERT(!fault_mgr_segment_left(m.port));
}

static void test_ring_memory_full(void)
{
	fill_channels("ring_memory 1M", "ring_memory 1M\n", 16);
}

static void test_channel_table_full(void)
{
	fill_channels("max_channels 3", "max_channels 3\n", 3);
}

/* ---- /dev/shm full ------------------------------------------------------ */

/* In a child: a private /dev/shm of size bytes, filled up.  0 or -errno. */
static int tiny_dev_shm(const char *size, int fill)
{
	char opts[64];
	int fd;

	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	snprintf(opts, sizeof(opts), "mode=1777,size=%s", size);
	if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		return -errno;
	if (!fill)
		return 0;
	fd = open("/dev/shm/filler", O_CREAT | O_WRONLY, 0600);
	if (fd < 0)
		return -errno;
	for (;;) {
		static const char page[4096];

		if (write(fd, page, sizeof(page)) <= 0)
			break;
	}
	close(fd);
	return 0;
}

static int can_mount(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "  SKIP: a private /dev/shm needs root\n");
		return 0;
	}
	return 1;
}

static void test_dev_shm_full_manager(void)
{
	const char *bin = getenv("MP_MGR_BIN");
	char conf[128], err[4096];
	int pfd[2], st, port = mp_free_port();
	size_t used = 0;
	ssize_t r;
	FILE *f;
	pid_t pid;

	if (!can_mount())
		return;
	if (!bin)
		bin = "./mgrd/messip-mgr";
	snprintf(conf, sizeof(conf), "/tmp/messip-test-%ld-shmfull.conf",
		 (long)getpid());
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f, "listen 127.0.0.1:%d\nstatus_listen off\nworkers 1\n", port);
	fclose(f);
	CU_ASSERT_FATAL(pipe(pfd) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		dup2(pfd[1], 2);
		if (tiny_dev_shm("256k", 0) < 0)
			_exit(100);
		execl(bin, bin, "-f", "-c", conf, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	st = mp_test_wait(pid, 5000);
	if (st == -1)
		mp_test_kill(pid);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	while (used + 1 < sizeof(err) &&
	       (r = read(pfd[0], err + used, sizeof(err) - used - 1)) > 0)
		used += (size_t)r;
	err[used] = '\0';
	close(pfd[0]);
	unlink(conf);
	fprintf(stderr, "  manager with /dev/shm of 256k: %s %d\n",
		st == -1	? "still running"
		: WIFEXITED(st) ? "exit"
				: "signal",
		st == -1	? 0
		: WIFEXITED(st) ? WEXITSTATUS(st)
				: WTERMSIG(st));
	CU_ASSERT(st != -1 && WIFEXITED(st));
	CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0 &&
		  WEXITSTATUS(st) != 100 && WEXITSTATUS(st) != 127);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "MESSIP-MGR-SHM"));
	if (!strstr(err, "MESSIP-MGR-SHM"))
		fprintf(stderr, "  its stderr: %s\n", err);
}

struct shmfull_arg {
	struct api_gate *ready;
};

/* A server whose /dev/shm is full: 0 served, 3 said ENOSPC. */
static void shmfull_server(void *p)
{
	struct shmfull_arg *a = p;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t type = 0;
	char buf[256];
	int r;

	CHILD_CHECK(tiny_dev_shm("64k", 1) == 0);
	cnx = api_connect("shmfull");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "l-shmfull", 5000, 0);
	if (!ch) {
		CHILD_CHECK(errno == ENOSPC);
		api_gate_signal(a->ready);
		_exit(3);
	}
	api_gate_signal(a->ready);
	r = messip_receive(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(r >= 0);
	CHILD_CHECK(messip_reply(ch, r, type, buf, ch->datalenr, 2000) == 0);
	r = messip_receive(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(r == MESSIP_MSG_NOREPLY && type == 8);
	messip_disconnect(cnx, 2000);
}

static void test_dev_shm_full_server(void)
{
	struct api_gate ready;
	struct shmfull_arg sa = {&ready};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pid_t pid;
	int st;

	if (!can_mount())
		return;
	api_gate_init(&ready);
	pid = api_fork(shmfull_server, &sa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	cnx = api_connect("shmcli");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_connect(cnx, "l-shmfull", 1000);
	if (ch) {
		int ok = fault_echo_ok(ch, 1, 100, 5000);

		if (!ok)
			fprintf(stderr, "  echo: %s\n", strerror(errno));
		CU_ASSERT(ok);
		CU_ASSERT(messip_buffered_send(ch, 8, "b", 1, 2000) >= 0);
	}
	st = mp_test_wait(pid, 10000);
	if (st == -1)
		mp_test_kill(pid);
	fprintf(stderr, "  server with a full /dev/shm: %s\n",
		ch ? "created its channel and served over TCP"
		   : "channel_create said ENOSPC");
	/* Served (exit 0), or refused with ENOSPC (exit 3): never a crash. */
	CU_ASSERT(st != -1 && WIFEXITED(st));
	CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == (ch ? 0 : 3));
	messip_disconnect(cnx, 2000);
	api_gate_close(&ready);
}

/* A process that spins on a listening socket it cannot accept from
 * burns about 1000 ms of CPU per second; a quiet one, almost none. */

static void test_manager_emfile_spin(void)
{
	enum { MAXC = 100 };
	messip_cnx_t *c[MAXC];
	struct mp_mgrproc m;
	pid_t w[4];
	long c0 = -1, c1 = -1;
	int n = 0;

	fault_mgr_nofile = 48;
	CU_ASSERT_FATAL(fault_mgr_start_on(&m, 0, 1, NULL) == 0);
	fault_mgr_nofile = 0;
	while (n < MAXC && (c[n] = messip_connect(m.ref, "many", 500)) != NULL)
		n++;
	CU_ASSERT(n < MAXC);
	if (fault_children_of(m.pid, w, 4) == 1) {
		c0 = fault_cpu_ms(w[0]);
		api_sleep_ms(1000);
		c1 = fault_cpu_ms(w[0]);
	}
	fprintf(stderr,
		"  manager worker with a client it cannot accept: %ld "
		"ms CPU in 1 s\n",
		c1 - c0);
	CU_ASSERT(c0 >= 0 && c1 - c0 < SPIN_MS);
	for (int i = 0; i < n; i++)
		messip_disconnect(c[i], 1000);
	mp_mgrproc_stop(&m);
	fault_mgr_segment_remove(m.port);
}

static const struct mp_test_case tests[] = {
	{"more connections than max_connections: the extra one refused at "
	 "once, the others work",
	 test_too_many_connections},
	{"server out of descriptors: alive, no busy loop, its clients "
	 "served, waiting ones served once descriptors free",
	 test_server_out_of_fds},
	{"manager out of descriptors: alive, its connections work, room "
	 "again once some leave",
	 test_manager_out_of_fds},
	{"ring memory full: channel_create ENOSPC, room reused",
	 test_ring_memory_full},
	{"channel table full: channel_create ENOSPC, room reused",
	 test_channel_table_full},
	{"manager out of descriptors with a client waiting: the connection "
	 "is shed, the worker does not spin",
	 test_manager_emfile_spin},
	{"/dev/shm full: the manager refuses to start, with a message",
	 test_dev_shm_full_manager},
	{"/dev/shm full in a server: channel served over TCP, or ENOSPC",
	 test_dev_shm_full_server},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_fault_limits", 60);
	/* A private /dev/shm is a mount: root only (skipped, not passed). */
	mp_test_needs(test_dev_shm_full_manager, mp_test_need_root);
	mp_test_needs(test_dev_shm_full_server, mp_test_need_root);
	api_verbose();
	api_start_mgr(2, NULL);
	rc = mp_test_main("fault_limits", tests);
	api_stop_mgr();
	return rc;
}
