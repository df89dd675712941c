/*
 * test_fault_util — helpers of the fault-injection programs
 * (tests/test_fault_*.c), on top of test_api_util.h:
 *
 *   - results that children publish in shared memory (fault_slot), with
 *     the time they happened, so the parent can assert on bounds;
 *   - the path switch: same-host clients use the channel's shared memory
 *     unless MESSIP_NO_SHM is set (fault_tcp_only, FAULT_BOTH_PATHS);
 *   - a manager started on a port of the test's choosing (so that it can
 *     be restarted on the same port), optionally with few descriptors;
 *   - CPU time of a process (to tell a busy loop from a wait), the
 *     children of a process, and whether a manager left its segment;
 *   - the raw protocol, enough to learn a server's direct port;
 *   - a self-checking echo server: payloads carry (sequence, length,
 *     checksum); it echoes synchronous messages, checks that buffered
 *     ones arrive intact and in order, and reports what it saw.
 *
 * Every program that includes this arms the watchdog through
 * mp_test_init, starts its processes with mp_test_fork (killed at exit)
 * and removes what it made in /dev/shm.  Children report through their
 * exit status or a fault_slot, never through CUnit.
 */
#ifndef TEST_FAULT_UTIL_H
#define TEST_FAULT_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "mp_rawauth.h"
#include "mp_wire.h"
#include "test_api_util.h"

/* Results children write for the parent: one slot per child. */
struct fault_slot {
	volatile int64_t t_ms; /* when the outcome happened (api_now_ms) */
	volatile int rc;       /* what the call returned */
	volatile int err;      /* errno then */
	volatile int done;
};

static inline struct fault_slot *fault_slots(int n)
{
	void *p =
		mmap(NULL, sizeof(struct fault_slot) * (size_t)n,
		     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		abort();
	memset(p, 0, sizeof(struct fault_slot) * (size_t)n);
	return p;
}

static inline void fault_slots_free(struct fault_slot *s, int n)
{
	munmap(s, sizeof(struct fault_slot) * (size_t)n);
}

static inline void fault_slot_set(struct fault_slot *s, int rc, int err)
{
	s->t_ms = api_now_ms();
	s->rc = rc;
	s->err = err;
	__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
}

/* Wait until n slots are done (up to timeout_ms); the number done. */
static inline int fault_slots_wait(struct fault_slot *s, int n, int timeout_ms)
{
	int64_t end = api_now_ms() + timeout_ms;
	int done;

	for (;;) {
		done = 0;
		for (int i = 0; i < n; i++)
			done += __atomic_load_n(&s[i].done, __ATOMIC_ACQUIRE);
		if (done == n || api_now_ms() >= end)
			return done;
		api_sleep_ms(5);
	}
}

/* ---- which path --------------------------------------------------------- */

/*
 * Same-host clients use the channel's shared-memory segment unless
 * MESSIP_NO_SHM is set (lib/mp_local.h); the library reads it at each
 * channel create and connect, and children inherit it.  Fault tests that
 * are about the TCP path, or that run once per path, set it here.
 */
static inline void fault_tcp_only(int on)
{
	if (on)
		setenv("MESSIP_NO_SHM", "1", 1);
	else
		unsetenv("MESSIP_NO_SHM");
}

/* Define NAME_tcp running NAME on the TCP path. */
#define FAULT_TCP_PATH(NAME)                                                   \
	static void NAME##_tcp(void)                                           \
	{                                                                      \
		fault_tcp_only(1);                                             \
		NAME();                                                        \
		fault_tcp_only(0);                                             \
	}

/* Define NAME_shm and NAME_tcp running NAME on each path. */
#define FAULT_BOTH_PATHS(NAME)                                                 \
	static void NAME##_shm(void)                                           \
	{                                                                      \
		fault_tcp_only(0);                                             \
		NAME();                                                        \
	}                                                                      \
	FAULT_TCP_PATH(NAME)

/* ---- a manager on a given port ------------------------------------------ */

/* When > 0, the next managers started run with RLIMIT_NOFILE at this. */
static int fault_mgr_nofile;

/*
 * Start messip-mgr on 127.0.0.1:port (port 0: a free one) with the extra
 * config lines, into m (as mp_mgrproc_start, whose mp_mgrproc_stop also
 * stops it).  Waits until it accepts (up to 5 s).  0 or -errno.
 */
static inline int fault_mgr_start_on(struct mp_mgrproc *m, int port,
				     int workers, const char *extra)
{
	const char *bin = getenv("MP_MGR_BIN");
	FILE *f;

	if (!bin)
		bin = "./mgrd/messip-mgr";
	memset(m, 0, sizeof(*m));
	m->port = port ? port : mp_free_port();
	if (m->port <= 0)
		return -EADDRNOTAVAIL;
	snprintf(m->conf, sizeof(m->conf), "/tmp/messip-test-%ld-fmgr-%d.conf",
		 (long)getpid(), m->port);
	f = fopen(m->conf, "w");
	if (!f)
		return -errno;
	fprintf(f, "listen 127.0.0.1:%d\nstatus_listen off\n", m->port);
	if (workers > 0)
		fprintf(f, "workers %d\n", workers);
	fprintf(f, "log_level %s\n",
		getenv("MP_TEST_VERBOSE") ? "debug" : "error");
	if (extra)
		fputs(extra, f);
	fclose(f);
	snprintf(m->ref, sizeof(m->ref), "127.0.0.1:%d", m->port);
	m->pid = mp_test_fork();
	if (m->pid < 0)
		return -errno;
	if (m->pid == 0) {
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		if (fault_mgr_nofile > 0) {
			struct rlimit rl = {(rlim_t)fault_mgr_nofile,
					    (rlim_t)fault_mgr_nofile};

			setrlimit(RLIMIT_NOFILE, &rl);
		}
		execl(bin, bin, "-f", "-c", m->conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		int fd = mp_tcp_connect_local(m->port);

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (waitpid(m->pid, NULL, WNOHANG) == m->pid) {
			mp_test_forget(m->pid);
			m->pid = 0;
			unlink(m->conf);
			return -EADDRINUSE;
		}
		api_sleep_ms(10);
	}
	mp_mgrproc_stop(m);
	return -ETIMEDOUT;
}

/* Is the manager's segment for port still in /dev/shm? */
static inline int fault_mgr_segment_left(int port)
{
	char path[64];
	struct stat sb;

	snprintf(path, sizeof(path), "/dev/shm/messip-mgr-%d", port);
	return stat(path, &sb) == 0;
}

/* Remove a killed manager's segment (a clean stop removes it itself). */
static inline void fault_mgr_segment_remove(int port)
{
	char name[64];

	snprintf(name, sizeof(name), "/messip-mgr-%d", port);
	shm_unlink(name);
}

/* Children of pid (from /proc), up to max, into out; the count. */
static inline int fault_children_of(pid_t pid, pid_t *out, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL && n < max) {
		char path[300], buf[512], *p;
		long ppid = -1;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) &&
		    sscanf(p + 2, "%*c %ld", &ppid) == 1 && ppid == (long)pid)
			out[n++] = (pid_t)atol(de->d_name);
		fclose(f);
	}
	closedir(d);
	return n;
}

/* CPU time (user + system) of a process so far, in ms; -1 if unknown. */
static inline long fault_cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;
	long hz = sysconf(_SC_CLK_TCK);

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (!p || !(p = strrchr(buf, ')')))
		return -1;
	/* Fields after the name: state(3) ... utime(14) stime(15). */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
		   &ut, &st) != 2)
		return -1;
	return (long)((ut + st) * 1000 / (unsigned long)(hz > 0 ? hz : 100));
}

/* ---- raw protocol ------------------------------------------------------- */

/* Send one frame on a blocking socket: 0 or -1. */
static inline int fault_raw_send(int fd, const struct mp_wire_msg *m)
{
	uint8_t buf[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 256];
	int n = mp_wire_encode(m, buf, sizeof(buf));

	return n > 0 && write(fd, buf, (size_t)n) == n ? 0 : -1;
}

/* Read one answer within timeout_ms: 0 or -1.  Its data (a CH_INFO's
 * ticket) is not kept: m->data must not be used. */
static inline int fault_raw_recv(int fd, struct mp_wire_msg *m, int timeout_ms)
{
	uint8_t buf[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 64];
	size_t have = 0;

	while (have < sizeof(buf)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = mp_wire_decode(buf, have, 64, m);
		ssize_t r;

		if (n > 0)
			return 0;
		if (n < 0 || poll(&p, 1, timeout_ms) <= 0)
			return -1;
		r = read(fd, buf + have, 1); /* never past one frame */
		if (r <= 0)
			return -1;
		have += (size_t)r;
	}
	return -1;
}

/*
 * The port of a server's direct listening socket, asked of the manager
 * at mgr_port like a library would (a registration that then ends: the
 * server sees it DISMISSED).  The port, or -1.
 */
static inline int fault_server_port(int mgr_port, const char *name)
{
	uint8_t ticket[MP_AUTH_NONCE];

	return rawauth_locate(mgr_port, name, ticket);
}

/* ---- a self-checking echo server ---------------------------------------- */

#define FAULT_T_QUIT  0x40000000 /* asks the server for its report */
#define FAULT_T_PEEK  0x40000001 /* the report so far; the server goes on */
#define FAULT_MSG_HDR 12	 /* seq, length, checksum */

/* ---- payloads that check themselves ------------------------------------- */

static inline void fault_fill(uint8_t *b, uint32_t seq, uint32_t len)
{
	uint32_t sum = 0;

	for (uint32_t i = FAULT_MSG_HDR; i < len; i++) {
		b[i] = (uint8_t)(seq * 31u + i * 7u);
		sum += b[i];
	}
	memcpy(b, &seq, 4);
	memcpy(b + 4, &len, 4);
	memcpy(b + 8, &sum, 4);
}

/* 1 when b[0..len) is the payload for seq. */
static inline int fault_intact(const uint8_t *b, uint32_t len, uint32_t seq)
{
	uint32_t s, l, sum, mine = 0;

	if (len < FAULT_MSG_HDR)
		return 0;
	memcpy(&s, b, 4);
	memcpy(&l, b + 4, 4);
	memcpy(&sum, b + 8, 4);
	if (s != seq || l != len)
		return 0;
	for (uint32_t i = FAULT_MSG_HDR; i < len; i++) {
		if (b[i] != (uint8_t)(seq * 31u + i * 7u))
			return 0;
		mine += b[i];
	}
	return mine == sum;
}

/* ---- the server --------------------------------------------------------- */

struct fault_srv_arg {
	const char *ref; /* manager, or a proxy in front of it */
	const char *name;
	struct api_gate *ready;
};

struct fault_srv_report {
	int32_t sync, buffered, bad, dismissed, disconnect, events, errors;
	int32_t reply_esrch;
};

/*
 * Echoes synchronous messages (answer: the seq they carry), checks that
 * buffered ones come intact and in order (type = seq from 0), reports on
 * FAULT_T_QUIT.
 */
static inline void fault_check_server(void *p)
{
	static uint8_t buf[MESSIP_MAX_MSGLEN];
	struct fault_srv_arg *a = p;
	messip_cnx_t *cnx = messip_connect(a->ref, "chksrv", 5000);
	struct fault_srv_report rep = {0};
	messip_channel_t *ch;
	uint32_t next_buf = 0;
	int64_t end;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	end = api_now_ms() + 50000;
	while (api_now_ms() < end) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 500), rr;

		if (r == MESSIP_MSG_TIMEOUT)
			continue;
		if (r == -1) {
			rep.errors++;
			continue;
		}
		if (r == MESSIP_MSG_NOREPLY) {
			if ((uint32_t)type == next_buf &&
			    fault_intact(buf, (uint32_t)ch->datalen, next_buf))
				next_buf++;
			else
				rep.bad++;
			rep.buffered++;
			continue;
		}
		if (r == MESSIP_MSG_DISMISSED) {
			rep.dismissed++;
			continue;
		}
		if (r == MESSIP_MSG_DISCONNECT) {
			rep.disconnect++;
			continue;
		}
		if (r < 0) {
			rep.events++;
			continue;
		}
		if (type == FAULT_T_QUIT || type == FAULT_T_PEEK) {
			CHILD_CHECK(messip_reply(ch, r, 0, &rep, sizeof(rep),
						 2000) == 0);
			if (type == FAULT_T_QUIT)
				break;
			continue;
		}
		rep.sync++;
		if (!fault_intact(buf, (uint32_t)ch->datalen, (uint32_t)type))
			rep.bad++;
		errno = 0;
		rr = messip_reply(ch, r, type, buf, ch->datalen, 5000);
		if (rr == -1 && errno == ESRCH)
			rep.reply_esrch++;
		else if (rr != 0)
			rep.errors++;
	}
	messip_disconnect(cnx, 1000);
}

/* Ask the server for its report (and end it). */
static inline int fault_quit(messip_channel_t *ch, struct fault_srv_report *rep)
{
	int32_t answer;

	memset(rep, 0, sizeof(*rep));
	return messip_send(ch, FAULT_T_QUIT, NULL, 0, &answer, rep,
			   sizeof(*rep), 5000);
}

/* Wait up to timeout_ms until the server has received n buffered
 * messages (buffered ones come through the manager, a QUIT does not:
 * it could overtake them).  0 with *rep, or -1. */
static inline int fault_wait_buffered(messip_channel_t *ch, int32_t n,
				      struct fault_srv_report *rep,
				      int timeout_ms)
{
	int64_t end = api_now_ms() + timeout_ms;
	int32_t answer;

	do {
		memset(rep, 0, sizeof(*rep));
		if (messip_send(ch, FAULT_T_PEEK, NULL, 0, &answer, rep,
				sizeof(*rep), 2000) != 0)
			return -1;
		if (rep->buffered >= n)
			return 0;
		api_sleep_ms(20);
	} while (api_now_ms() < end);
	return -1;
}

/* One checked echo of len bytes (not thread-safe: static buffers). */
static inline int fault_echo_ok(messip_channel_t *ch, uint32_t seq,
				uint32_t len, int timeout_ms)
{
	static uint8_t out[MESSIP_MAX_MSGLEN], in[MESSIP_MAX_MSGLEN];
	int32_t answer = -1;

	fault_fill(out, seq, len);
	memset(in, 0, len);
	if (messip_send(ch, (int32_t)seq, out, (int)len, &answer, in,
			sizeof(in), timeout_ms) != 0)
		return 0;
	return answer == (int32_t)seq && ch->datalen == (int32_t)len &&
	       fault_intact(in, len, seq);
}

static inline int fault_bsend_ok(messip_channel_t *ch, uint32_t seq,
				 uint32_t len)
{
	static uint8_t out[MESSIP_MAX_MSGLEN];

	fault_fill(out, seq, len);
	return messip_buffered_send(ch, (int32_t)seq, out, (int)len, 5000) >= 0;
}

static inline pid_t fault_start_server(struct fault_srv_arg *a,
				       struct api_gate *g, const char *ref,
				       const char *name)
{
	a->ref = ref;
	a->name = name;
	a->ready = g;
	api_gate_init(g);
	return api_fork(fault_check_server, a);
}

#endif
