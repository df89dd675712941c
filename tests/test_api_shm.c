/*
 * test_api_shm — the same-host fast path of libmessip, with real
 * processes and a real manager.
 *
 *   - path selection: same /dev/shm -> shared memory; MESSIP_NO_SHM in
 *     the client or in the server -> TCP; separate /dev/shm (network
 *     namespaces with private /dev/shm, root only) -> TCP;
 *   - one table of behavioural cases, run twice by the same code: once on
 *     the shared-memory path, once on TCP (MESSIP_NO_SHM=1 everywhere):
 *     sizes 0..64 KiB, vectors, truncation and ping; replies out of order
 *     and indices reused; a timeout with its late reply discarded and a
 *     withdrawn request never delivered; the server killed while a client
 *     waits (ESRCH within 1 s); a client killed holding a request
 *     (DISMISSED once, the reply ESRCH, the server carries on); buffered
 *     order, sender and back-pressure; the zero-copy calls; credentials;
 *     a server in a poll() loop over messip_channel_fd;
 *   - a process that scribbles over the segment: the request it hit gets
 *     EBADMSG, the server keeps serving;
 *   - no /dev/shm object is left by any server this program started.
 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "mp_chseg.h"
#include "mp_netns.h"
#include "test_api_util.h"

#define T_ECHO	1
#define T_HOLD	2 /* held by the server until it is told */
#define T_QUIT	9
#define N_ORDER 300
#define MAX_SRV 64

enum path { P_SHM, P_TCP };

static enum path cur;	    /* the path the current run is about */
static pid_t srvs[MAX_SRV]; /* every process that created a channel */
static int nsrvs;

static int want(void)
{
	return cur == P_SHM ? MESSIP_PATH_SHM : MESSIP_PATH_TCP;
}

/* Put this process on the run's path (children inherit it). */
static void path_env(void)
{
	if (cur == P_TCP)
		setenv("MESSIP_NO_SHM", "1", 1);
	else
		unsetenv("MESSIP_NO_SHM");
}

static void remember(pid_t pid)
{
	if (pid > 0 && nsrvs < MAX_SRV)
		srvs[nsrvs++] = pid;
}

/* A server child: recorded for the /dev/shm check. */
static pid_t fork_server(void (*fn)(void *), void *arg)
{
	pid_t pid = api_fork(fn, arg);

	remember(pid);
	return pid;
}

/* Segments in /dev/shm made by process pid: their count; the first name
 * in name (without the leading '/') if asked. */
static int segments_of(pid_t pid, char *name, size_t namesz)
{
	struct dirent *de;
	char mid[32];
	int n = 0;
	DIR *d = opendir("/dev/shm");

	if (!d)
		return 0;
	snprintf(mid, sizeof(mid), "-%ld-", (long)pid);
	while ((de = readdir(d)) != NULL) {
		const char *p;

		if (strncmp(de->d_name, "messip-ch-", 10) != 0)
			continue;
		/* messip-ch-<token>-<pid>-<port>-<name> */
		p = strchr(de->d_name + 10, '-');
		if (!p || strncmp(p, mid, strlen(mid)) != 0)
			continue;
		if (!n && name)
			snprintf(name, namesz, "%s", de->d_name);
		n++;
	}
	closedir(d);
	return n;
}

static messip_channel_t *must_locate(messip_cnx_t *cnx, const char *name)
{
	return messip_channel_locate(cnx, name, 5000);
}

/* ---- servers ------------------------------------------------------------ */

struct srv_arg {
	const char *name;
	int32_t maxbuf;
	struct api_gate *ready; /* optional: signalled once created */
	int expect;		/* MESSIP_PATH_* of the channel, 0: any */
	struct api_gate *held;	/* optional: signalled for each T_HOLD */
};

/* Echo T_ECHO (answer = length); hold T_HOLD (answered at T_QUIT, and
 * then ESRCH expected: their clients are gone or were reset).  Ends at
 * T_QUIT. */
static void echo_server(void *p)
{
	struct srv_arg *a = p;
	static char buf[MESSIP_MAX_MSGLEN];
	int held[16], nheld = 0;
	messip_cnx_t *cnx = api_connect("echosrv");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, a->maxbuf);
	CHILD_CHECK(ch);
	if (a->expect)
		CHILD_CHECK(messip_channel_path(ch) == a->expect);
	if (a->ready)
		api_gate_signal(a->ready);
	for (;;) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 20000);

		CHILD_CHECK(r != MESSIP_MSG_TIMEOUT && r != -1);
		if (r < 0)
			continue; /* events, buffered */
		if (type == T_HOLD && nheld < 16) {
			held[nheld++] = r;
			if (a->held)
				api_gate_signal(a->held);
			continue;
		}
		if (type == T_QUIT) {
			for (int i = 0; i < nheld; i++)
				CHILD_CHECK(messip_reply(ch, held[i], 0, NULL,
							 0, 1000) == -1 &&
					    errno == ESRCH);
			CHILD_CHECK(messip_reply(ch, r, nheld, NULL, 0, 1000) ==
				    0);
			break;
		}
		CHILD_CHECK(messip_reply(ch, r, ch->datalen, buf, ch->datalenr,
					 5000) == 0);
	}
	CHILD_CHECK(messip_disconnect(cnx, 2000) == 0);
}

static void quit(messip_channel_t *ch, int held)
{
	int32_t answer = -1;

	CU_ASSERT_EQUAL(
		messip_send(ch, T_QUIT, NULL, 0, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(answer, held);
}

/* ---- case: sizes, vectors, truncation, ping ------------------------------ */

static void case_sizes(void)
{
	static const int sizes[] = {0, 64, 1024, 16384, 65536};
	static char out[65536], in[65536];
	struct srv_arg a = {"s-sizes", 0, NULL, 0, NULL};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer;
	pid_t pid;

	pid = fork_server(echo_server, &a);
	cnx = api_connect("sizes");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = must_locate(cnx, "s-sizes");
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(ch), want());
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int n = sizes[i];

		for (int k = 0; k < n; k++)
			out[k] = (char)(k * 7 + n);
		memset(in, 0, sizeof(in));
		answer = -1;
		CU_ASSERT_EQUAL(messip_send(ch, T_ECHO, out, n, &answer, in,
					    sizeof(in), 5000),
				0);
		CU_ASSERT_EQUAL(answer, n);
		CU_ASSERT_EQUAL(ch->datalen, n);
		CU_ASSERT_EQUAL(ch->datalenr, n);
		CU_ASSERT(memcmp(in, out, (size_t)n) == 0);
	}
	/* A message over 64 KiB is refused before anything is sent. */
	CU_ASSERT_EQUAL(messip_send(ch, T_ECHO, out, 65537, &answer, in,
				    sizeof(in), 1000),
			-1);
	CU_ASSERT_EQUAL(errno, EMSGSIZE);
	/* Vectored, and a reply longer than the buffer: cut. */
	{
		struct iovec v[3] = {
			{out, 10}, {out + 100, 0}, {out + 200, 990}};

		CU_ASSERT_EQUAL(
			messip_sendv(ch, T_ECHO, v, 3, &answer, in, 5, 5000),
			0);
		CU_ASSERT_EQUAL(answer, 1000);
		CU_ASSERT_EQUAL(ch->datalen, 1000);
		CU_ASSERT_EQUAL(ch->datalenr, 5);
		CU_ASSERT(memcmp(in, out, 5) == 0);
	}
	/* Dynamic mode. */
	{
		void *dyn = NULL;

		CU_ASSERT_EQUAL(messip_send(ch, T_ECHO, out, 300, &answer, &dyn,
					    0, 5000),
				0);
		CU_ASSERT_PTR_NOT_NULL(dyn);
		if (dyn)
			CU_ASSERT(memcmp(dyn, out, 300) == 0);
		free(dyn);
	}
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 2000), 0);
	quit(ch, 0);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
}

/* ---- case: out-of-order replies, indices reused -------------------------- */

#define N_OOO 3

static void ooo_server(void *p)
{
	struct srv_arg *a = p;
	messip_cnx_t *cnx = api_connect("ooosrv");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	for (int round = 0; round < 2; round++) {
		int idx[N_OOO];
		int32_t types[N_OOO];

		for (int n = 0; n < N_OOO;) {
			int32_t type = 0;
			int v = 0;
			int r = messip_receive(ch, &type, &v, sizeof(v), 10000);

			CHILD_CHECK(r != MESSIP_MSG_TIMEOUT && r != -1);
			if (r < 0)
				continue;
			/* Small, distinct indices. */
			CHILD_CHECK(r < N_OOO);
			for (int k = 0; k < n; k++)
				CHILD_CHECK(idx[k] != r);
			idx[n] = r;
			types[n++] = type;
		}
		/* Last received, first answered. */
		for (int n = N_OOO - 1; n >= 0; n--)
			CHILD_CHECK(messip_reply(ch, idx[n], types[n] * 10,
						 &types[n], sizeof(types[n]),
						 2000) == 0);
	}
	messip_disconnect(cnx, 2000);
}

static void ooo_client(void *p)
{
	int32_t type = (int32_t)(intptr_t)p, answer = 0, back = 0;
	messip_cnx_t *cnx = api_connect("ooocli");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = must_locate(cnx, "s-ooo");
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	for (int round = 0; round < 2; round++) {
		CHILD_CHECK(messip_send(ch, type, &type, sizeof(type), &answer,
					&back, sizeof(back), 10000) == 0);
		CHILD_CHECK(answer == type * 10 && back == type);
	}
	messip_disconnect(cnx, 2000);
}

static void case_out_of_order(void)
{
	struct api_gate ready;
	struct srv_arg a = {"s-ooo", 0, &ready, 0, NULL};
	pid_t srv, cli[N_OOO];

	api_gate_init(&ready);
	srv = fork_server(ooo_server, &a);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	for (int i = 0; i < N_OOO; i++)
		cli[i] = api_fork(ooo_client, (void *)(intptr_t)(i + 1));
	for (int i = 0; i < N_OOO; i++)
		CU_ASSERT(api_child_ok(cli[i], 15000));
	CU_ASSERT(api_child_ok(srv, 5000));
	api_gate_close(&ready);
}

/* ---- case: timeout, late reply discarded, withdrawn never delivered ------ */

static void slow_server(void *p)
{
	struct srv_arg *a = p;
	messip_cnx_t *cnx = api_connect("slow");
	messip_channel_t *ch;
	int32_t type = 0;
	char buf[16];
	int idx;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	/* 1: answered after the client gave up (150 ms): dropped. */
	do
		idx = messip_receive(ch, &type, buf, sizeof(buf), 10000);
	while (idx < 0 && idx != -1 && idx != MESSIP_MSG_TIMEOUT);
	CHILD_CHECK(idx >= 0 && type == 1);
	api_sleep_ms(400);
	CHILD_CHECK(messip_reply(ch, idx, 111, "late", 4, 2000) == 0);
	/* 2: in time; then look away while 3 times out. */
	idx = messip_receive(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(idx >= 0 && type == 2);
	CHILD_CHECK(messip_reply(ch, idx, 222, "ok", 2, 2000) == 0);
	api_sleep_ms(500);
	/* 3 was withdrawn before we looked: the next is 4. */
	do
		idx = messip_receive(ch, &type, buf, sizeof(buf), 10000);
	while (idx < 0 && idx != -1 && idx != MESSIP_MSG_TIMEOUT);
	CHILD_CHECK(idx >= 0 && type == 4);
	CHILD_CHECK(messip_reply(ch, idx, 444, NULL, 0, 2000) == 0);
	do
		idx = messip_receive(ch, &type, buf, sizeof(buf), 10000);
	while (idx >= 0 || idx == MESSIP_MSG_NOREPLY);
	CHILD_CHECK(idx == MESSIP_MSG_DISCONNECT);
	messip_disconnect(cnx, 2000);
}

static void case_timeout_late_reply(void)
{
	struct srv_arg a = {"s-late", 0, NULL, 0, NULL};
	messip_cnx_t *cnx = api_connect("late");
	messip_channel_t *ch;
	int32_t answer = 0;
	char buf[16];
	int64_t t0, dt;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	pid = fork_server(slow_server, &a);
	ch = must_locate(cnx, "s-late");
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(ch), want());
	t0 = api_now_ms();
	errno = 0;
	CU_ASSERT_EQUAL(
		messip_send(ch, 1, "a", 1, &answer, buf, sizeof(buf), 150),
		MESSIP_MSG_TIMEOUT);
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT(dt >= 140 && dt < 1000);
	memset(buf, 0, sizeof(buf));
	CU_ASSERT_EQUAL(
		messip_send(ch, 2, "b", 1, &answer, buf, sizeof(buf), 3000), 0);
	CU_ASSERT_EQUAL(answer, 222); /* not the late 111 */
	CU_ASSERT_EQUAL(ch->datalen, 2);
	CU_ASSERT(memcmp(buf, "ok", 2) == 0);
	CU_ASSERT_EQUAL(messip_send(ch, 3, "c", 1, &answer, NULL, 0, 150),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(messip_send(ch, 4, "d", 1, &answer, NULL, 0, 3000), 0);
	CU_ASSERT_EQUAL(answer, 444);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
}

/* ---- case: the server is killed while a client waits --------------------- */

static void blocked_client(void *p)
{
	const char *name = p;
	messip_cnx_t *cnx = api_connect("blocked");
	messip_channel_t *ch;
	int32_t answer;

	CHILD_CHECK(cnx);
	ch = must_locate(cnx, name);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	CHILD_CHECK(messip_send(ch, T_HOLD, "?", 1, &answer, NULL, 0,
				MESSIP_NOTIMEOUT) == -1);
	CHILD_CHECK(errno == ESRCH);
	/* And from then on, at once. */
	CHILD_CHECK(messip_send(ch, T_ECHO, "?", 1, &answer, NULL, 0, 1000) ==
		    -1);
	CHILD_CHECK(errno == ESRCH);
	CHILD_CHECK(messip_channel_ping(ch, 1000) == -1 && errno == ESRCH);
	messip_disconnect(cnx, 1000);
}

static void case_server_killed(void)
{
	struct api_gate ready;
	struct srv_arg a = {"s-killed", 0, &ready, 0, NULL};
	messip_cnx_t *cnx = api_connect("watcher");
	messip_channel_t *ch;
	pid_t srv, cli;
	int64_t t0, dt;
	int st;

	CU_ASSERT_FATAL(cnx != NULL);
	api_gate_init(&ready);
	srv = fork_server(echo_server, &a);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	cli = api_fork(blocked_client, (void *)a.name);
	/* The client's request is held once the server answers our ping
	 * after it (each client's messages are taken in order; give the
	 * other client a moment). */
	ch = must_locate(cnx, a.name);
	CU_ASSERT_FATAL(ch != NULL);
	api_sleep_ms(300);
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 2000), 0);
	t0 = api_now_ms();
	mp_test_kill(srv);
	st = mp_test_wait(cli, 3000);
	dt = api_now_ms() - t0;
	CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT(dt < 1000);
	if (st == -1)
		mp_test_kill(cli);
	fprintf(stderr, "  (client saw ESRCH %lld ms after the kill)\n",
		(long long)dt);
	/* The client removed what the dead server left in /dev/shm. */
	CU_ASSERT_EQUAL(segments_of(srv, NULL, 0), 0);
	messip_disconnect(cnx, 2000);
	api_gate_close(&ready);
}

/* ---- case: a client is killed holding a request -------------------------- */

static void holding_client(void *p)
{
	struct api_gate *ready = p;
	messip_cnx_t *cnx = api_connect("victim");
	messip_channel_t *ch;
	int32_t answer;

	CHILD_CHECK(cnx);
	ch = must_locate(cnx, "s-victim");
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	api_gate_signal(ready);
	messip_send(ch, T_HOLD, "help", 4, &answer, NULL, 0, 30000);
	api_sleep_ms(30000); /* until killed */
}

static void echo_client(void *p)
{
	char in[8] = {0};
	int32_t answer = 0;
	messip_cnx_t *cnx = api_connect("survivor");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = must_locate(cnx, (const char *)p);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	CHILD_CHECK(messip_send(ch, T_ECHO, "abc", 3, &answer, in, sizeof(in),
				5000) == 0);
	CHILD_CHECK(answer == 3 && memcmp(in, "abc", 3) == 0);
	CHILD_CHECK(messip_channel_disconnect(ch, 2000) == MESSIP_OK);
	messip_disconnect(cnx, 2000);
}

static void case_client_killed(void)
{
	messip_cnx_t *cnx = api_connect("carer");
	struct api_gate ready;
	messip_channel_t *ch;
	int32_t type = 0;
	char buf[16];
	int idx = -1, dismissed = 0, other = 0, r;
	pid_t pid, uid_pid = 0;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	int64_t end;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "s-victim", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	remember(getpid());
	CU_ASSERT_EQUAL(messip_channel_path(ch), want());
	api_gate_init(&ready);
	pid = api_fork(holding_client, &ready);
	end = api_now_ms() + 5000;
	while (idx < 0 && api_now_ms() < end) {
		r = messip_receive(ch, &type, buf, sizeof(buf), 1000);
		if (r >= 0)
			idx = r;
	}
	CU_ASSERT_FATAL(idx >= 0);
	CU_ASSERT_EQUAL(type, T_HOLD);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "victim");
	/* Credentials: same-host requests only. */
	r = messip_sender_cred(ch, idx, &uid_pid, &uid, &gid);
	if (cur == P_SHM) {
		CU_ASSERT_EQUAL(r, 0);
		CU_ASSERT_EQUAL(uid_pid, pid);
		CU_ASSERT_EQUAL(uid, geteuid());
		CU_ASSERT_EQUAL(gid, getegid());
	} else {
		CU_ASSERT_EQUAL(r, -1);
		CU_ASSERT_EQUAL(errno, ENODATA);
	}
	CU_ASSERT_EQUAL(messip_sender_cred(ch, idx + 1, NULL, NULL, NULL), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	mp_test_kill(pid);
	/* DISMISSED exactly once (from the manager; the segment's own
	 * detection of the death must not add another). */
	end = api_now_ms() + 1500;
	while (api_now_ms() < end) {
		r = messip_receive(ch, &type, buf, sizeof(buf),
				   (int)(end - api_now_ms()));
		if (r == MESSIP_MSG_TIMEOUT)
			break;
		if (r == MESSIP_MSG_DISMISSED) {
			dismissed++;
			CU_ASSERT_STRING_EQUAL(ch->remote_id, "victim");
		} else {
			other++;
		}
	}
	CU_ASSERT_EQUAL(dismissed, 1);
	CU_ASSERT_EQUAL(other, 0);
	errno = 0;
	CU_ASSERT_EQUAL(messip_reply(ch, idx, 1, "late", 4, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT_EQUAL(messip_reply(ch, idx, 1, NULL, 0, 1000), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	/* The server carries on: another client is served. */
	pid = api_fork(echo_client, "s-victim");
	end = api_now_ms() + 5000;
	r = -1;
	while (api_now_ms() < end) {
		r = messip_receive(ch, &type, buf, sizeof(buf), 1000);
		if (r >= 0) {
			CU_ASSERT_EQUAL(messip_reply(ch, r, ch->datalen, buf,
						     ch->datalenr, 1000),
					0);
			break;
		}
	}
	CU_ASSERT(r >= 0);
	CU_ASSERT(api_child_ok(pid, 5000));
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

/* ---- case: buffered order, sender, back-pressure ------------------------- */

static void order_sender(void *p)
{
	messip_cnx_t *cnx = api_connect("bsender");
	messip_channel_t *ch;

	(void)p;
	CHILD_CHECK(cnx);
	ch = must_locate(cnx, "s-border");
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	for (int i = 0; i < N_ORDER; i++)
		CHILD_CHECK(messip_buffered_send(ch, i % 7, &i, sizeof(i),
						 10000) >= 0);
	CHILD_CHECK(messip_channel_disconnect(ch, 2000) == MESSIP_OK);
	CHILD_CHECK(messip_disconnect(cnx, 2000) == 0);
}

struct press_arg {
	struct api_gate *phase; /* child -> parent */
	struct api_gate *go;	/* parent -> child */
};

static void pressing_sender(void *p)
{
	struct press_arg *a = p;
	messip_cnx_t *cnx = api_connect("presser");
	messip_channel_t *ch;
	int64_t t0, dt;
	int32_t rc;

	CHILD_CHECK(cnx);
	ch = must_locate(cnx, "s-press");
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	for (int i = 0; i < 4; i++)
		CHILD_CHECK(messip_buffered_send(ch, i, &i, sizeof(i), 2000) ==
			    i);
	/* Full: waits out its timeout, ETIMEDOUT, not queued. */
	t0 = api_now_ms();
	rc = messip_buffered_send(ch, 99, "lost", 4, 300);
	dt = api_now_ms() - t0;
	CHILD_CHECK(rc == -1 && errno == ETIMEDOUT);
	CHILD_CHECK(dt >= 280 && dt < 3000);
	rc = messip_buffered_send(ch, 99, "lost", 4, 0);
	CHILD_CHECK(rc == -1 && errno == ETIMEDOUT);
	api_gate_signal(a->phase);
	/* Waits for room: the server takes one after ~400 ms. */
	t0 = api_now_ms();
	CHILD_CHECK(messip_buffered_send(ch, 4, "wait", 4, 10000) >= 0);
	dt = api_now_ms() - t0;
	CHILD_CHECK(dt >= 300 && dt < 5000);
	CHILD_CHECK(api_gate_wait(a->go, 10000));
	CHILD_CHECK(messip_buffered_send(ch, 5, "last", 4, 2000) >= 0);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void case_buffered(void)
{
	messip_cnx_t *cnx = api_connect("bserver");
	struct api_gate phase, go;
	struct press_arg pa = {&phase, &go};
	messip_channel_t *ch, *pch;
	int next = 0, bad = 0, disc = 0, types[8], n = 0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	remember(getpid());
	ch = messip_channel_create(cnx, "s-border", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	pid = api_fork(order_sender, NULL);
	/* In order, from the right sender; its DISCONNECT after them all. */
	while (!disc) {
		int32_t type = -1, v = -1;
		int r = messip_receive(ch, &type, &v, sizeof(v), 5000);

		if (r == MESSIP_MSG_DISCONNECT) {
			disc++;
			continue;
		}
		if (r != MESSIP_MSG_NOREPLY) {
			CU_FAIL("unexpected receive outcome");
			break;
		}
		if (v != next || type != next % 7 || ch->datalen != 4 ||
		    strcmp(ch->remote_id, "bsender") != 0)
			bad++;
		next++;
	}
	CU_ASSERT_EQUAL(next, N_ORDER);
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT(api_child_ok(pid, 5000));

	/* Back-pressure against a queue of 4. */
	pch = messip_channel_create(cnx, "s-press", 2000, 4);
	CU_ASSERT_FATAL(pch != NULL);
	api_gate_init(&phase);
	api_gate_init(&go);
	pid = api_fork(pressing_sender, &pa);
	CU_ASSERT(api_gate_wait(&phase, 10000));
	api_sleep_ms(400);
	for (;;) {
		int32_t type = -1;
		char buf[8];
		int r = messip_receive(pch, &type, buf, sizeof(buf), 3000);

		if (r == MESSIP_MSG_NOREPLY && n < 8) {
			types[n++] = type;
			if (n == 5)
				api_gate_signal(&go);
			if (n == 6)
				break;
			continue;
		}
		if (r == MESSIP_MSG_TIMEOUT || r == -1)
			break;
	}
	CU_ASSERT_EQUAL(n, 6);
	for (int i = 0; i < n; i++)
		CU_ASSERT_EQUAL(types[i], i); /* 99 never queued */
	CU_ASSERT(api_child_ok(pid, 5000));
	api_gate_close(&phase);
	api_gate_close(&go);
	messip_disconnect(cnx, 2000);
}

/* ---- case: zero copy ----------------------------------------------------- */

/* Replies to a request of n bytes with its bytes reversed, built in a
 * loaned reply buffer; echoes T_ECHO from the view itself. */
static void zc_server(void *p)
{
	struct srv_arg *a = p;
	messip_cnx_t *cnx = api_connect("zcsrv");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	for (;;) {
		const void *data = NULL;
		int32_t type = 0;
		int len = -1;
		int r = messip_receive_view(ch, &type, &data, &len, 10000);
		uint8_t *out;

		CHILD_CHECK(r != MESSIP_MSG_TIMEOUT && r != -1);
		if (r == MESSIP_MSG_NOREPLY) {
			CHILD_CHECK(len == 5 && memcmp(data, "bview", 5) == 0);
			continue;
		}
		if (r < 0) {
			CHILD_CHECK(data == NULL && len == 0);
			continue;
		}
		CHILD_CHECK(len == ch->datalen);
		CHILD_CHECK(len == 0 || data != NULL);
		if (type == T_QUIT) {
			CHILD_CHECK(messip_reply(ch, r, 0, NULL, 0, 1000) == 0);
			break;
		}
		if (type == T_ECHO) {
			CHILD_CHECK(messip_reply(ch, r, len, data, len, 2000) ==
				    0);
			continue;
		}
		out = messip_reply_loan(ch, r, (size_t)len);
		CHILD_CHECK(out != NULL);
		for (int i = 0; i < len; i++)
			out[i] = ((const uint8_t *)data)[len - 1 - i];
		CHILD_CHECK(messip_reply_loaned(ch, r, -len, out, len, 2000) ==
			    0);
		/* The index is free again. */
		CHILD_CHECK(messip_reply_loan(ch, r, 1) == NULL &&
			    errno == EINVAL);
	}
	messip_disconnect(cnx, 2000);
}

static void case_zero_copy(void)
{
	static const int sizes[] = {0, 64, 65536};
	struct api_gate ready;
	struct srv_arg a = {"s-zc", 0, &ready, 0, NULL};
	messip_cnx_t *cnx = api_connect("zccli");
	messip_channel_t *ch;
	void *loans[9];
	int32_t answer;
	char in[16];
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	api_gate_init(&ready);
	pid = fork_server(zc_server, &a);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	ch = must_locate(cnx, "s-zc");
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(ch), want());
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int n = sizes[i];
		const uint8_t *view = NULL;
		uint8_t *b = messip_buffer_loan(ch, (size_t)n, 2000);
		int vlen = -1;

		CU_ASSERT_PTR_NOT_NULL_FATAL(b);
		for (int k = 0; k < n; k++)
			b[k] = (uint8_t)(k * 13 + 1);
		answer = 0;
		CU_ASSERT_EQUAL(messip_send_view(ch, 7, b, n, &answer,
						 (const void **)&view, &vlen,
						 5000),
				0);
		CU_ASSERT_EQUAL(answer, -n);
		CU_ASSERT_EQUAL(vlen, n);
		CU_ASSERT_EQUAL(ch->datalen, n);
		CU_ASSERT(n == 0 || view != NULL);
		for (int k = 0; k < n && view; k++) {
			if (view[k] != (uint8_t)((n - 1 - k) * 13 + 1)) {
				CU_FAIL("reply view content");
				break;
			}
		}
		CU_ASSERT_EQUAL(messip_buffer_release(ch, view), 0);
		/* Released: not any more. */
		CU_ASSERT_EQUAL(messip_buffer_release(ch, view), -1);
		CU_ASSERT_EQUAL(errno, EINVAL);
	}
	/* Copying reply from a loan; echo from the server's view. */
	{
		char *b = messip_buffer_loan(ch, 100, 2000);

		CU_ASSERT_PTR_NOT_NULL_FATAL(b);
		memcpy(b, "zero-copy", 9);
		memset(in, 0, sizeof(in));
		CU_ASSERT_EQUAL(messip_send_loaned(ch, T_ECHO, b, 9, &answer,
						   in, sizeof(in), 5000),
				0);
		CU_ASSERT_EQUAL(answer, 9);
		CU_ASSERT(memcmp(in, "zero-copy", 9) == 0);
		/* Spent: neither sent nor released again. */
		CU_ASSERT_EQUAL(messip_send_loaned(ch, T_ECHO, b, 9, &answer,
						   in, sizeof(in), 1000),
				-1);
		CU_ASSERT_EQUAL(errno, EINVAL);
		CU_ASSERT_EQUAL(messip_buffer_release(ch, b), -1);
		CU_ASSERT_EQUAL(errno, EINVAL);
	}
	/* Limits: 8 loans at once; no more than 64 KiB; not on servers. */
	for (int i = 0; i < 9; i++)
		loans[i] = messip_buffer_loan(ch, 10, 2000);
	for (int i = 0; i < 8; i++)
		CU_ASSERT_PTR_NOT_NULL(loans[i]);
	CU_ASSERT_PTR_NULL(loans[8]);
	CU_ASSERT_EQUAL(errno, EAGAIN);
	{
		char *b = loans[0];

		/* More than was loaned. */
		CU_ASSERT_EQUAL(messip_send_loaned(ch, T_ECHO, b, 11, &answer,
						   NULL, 0, 1000),
				-1);
		CU_ASSERT_EQUAL(errno, EMSGSIZE);
	}
	for (int i = 0; i < 8; i++)
		CU_ASSERT_EQUAL(messip_buffer_release(ch, loans[i]), 0);
	CU_ASSERT_PTR_NULL(messip_buffer_loan(ch, 65537, 100));
	CU_ASSERT_EQUAL(errno, EMSGSIZE);
	CU_ASSERT_EQUAL(
		messip_send_loaned(ch, T_ECHO, in, 1, &answer, NULL, 0, 100),
		-1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	/* Buffered messages arrive by view as well. */
	CU_ASSERT(messip_buffered_send(ch, 3, "bview", 5, 2000) >= 0);
	quit(ch, 0);
	CU_ASSERT(api_child_ok(pid, 5000));
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

/* ---- case: a server in a poll loop (messip_channel_fd) ---------------- */

static void poll_client(void *p)
{
	struct api_gate *held = p;
	messip_cnx_t *cnx = api_connect("pollcli");
	messip_channel_t *ch;
	int32_t answer = 0;

	CHILD_CHECK(cnx);
	ch = must_locate(cnx, "s-poll");
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == want());
	CHILD_CHECK(messip_buffered_send(ch, 5, "buf", 3, 5000) >= 0);
	CHILD_CHECK(messip_send(ch, T_ECHO, "sync", 4, &answer, NULL, 0,
				5000) == 0);
	CHILD_CHECK(answer == 4);
	api_gate_signal(held);
	messip_send(ch, T_HOLD, "held", 4, &answer, NULL, 0, 30000);
	api_sleep_ms(30000); /* until killed */
}

/* Receive through poll() on messip_channel_fd until want is seen (0: any
 * index, 1: an index or MESSIP_MSG_NOREPLY). */
static int poll_until(messip_channel_t *ch, int fd, int want_r, int ms,
		      int32_t *type)
{
	int64_t end = api_now_ms() + ms;

	while (api_now_ms() < end) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		char buf[16];
		int r;

		if (poll(&pf, 1, (int)(end - api_now_ms())) <= 0)
			continue;
		r = messip_receive(ch, type, buf, sizeof(buf), 0);
		if (r == MESSIP_MSG_TIMEOUT)
			continue; /* a spurious wake-up: allowed */
		if (want_r == 0 && r >= 0)
			return r;
		if (want_r == 1 && (r >= 0 || r == MESSIP_MSG_NOREPLY))
			return r; /* either */
		if (r == want_r)
			return r;
		if (r >= 0)
			messip_reply(ch, r, ch->datalen, NULL, 0, 1000);
	}
	return MESSIP_MSG_TIMEOUT;
}

static void case_poll_loop(void)
{
	messip_cnx_t *cnx = api_connect("pollsrv");
	struct api_gate held;
	messip_channel_t *ch;
	int32_t type = 0;
	int fd, r, idx;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	remember(getpid());
	ch = messip_channel_create(cnx, "s-poll", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	fd = messip_channel_fd(ch);
	CU_ASSERT_FATAL(fd >= 0);
	{
		struct pollfd pf = {.fd = fd, .events = POLLIN};

		CU_ASSERT_EQUAL(poll(&pf, 1, 50), 0); /* nothing yet */
	}
	api_gate_init(&held);
	pid = api_fork(poll_client, &held);
	/* The buffered message and the request, in either order (they take
	 * different ways: nothing orders them). */
	for (int got = 0, k = 0; got != 3 && k < 2; k++) {
		r = poll_until(ch, fd,
			       got & 1	 ? 0
			       : got & 2 ? MESSIP_MSG_NOREPLY
					 : 1,
			       5000, &type);
		if (r == MESSIP_MSG_NOREPLY) {
			CU_ASSERT_EQUAL(type, 5);
			got |= 1;
		} else if (r >= 0) {
			CU_ASSERT_EQUAL(type, T_ECHO);
			CU_ASSERT_EQUAL(
				messip_reply(ch, r, ch->datalen, NULL, 0, 1000),
				0);
			got |= 2;
		} else {
			CU_FAIL("nothing through the poll loop");
		}
	}
	CU_ASSERT(api_gate_wait(&held, 5000));
	idx = poll_until(ch, fd, 0, 5000, &type);
	CU_ASSERT(idx >= 0 && type == T_HOLD);
	/* Killed holding that request: DISMISSED through the poll loop too,
	 * and the reply to it fails. */
	mp_test_kill(pid);
	CU_ASSERT_EQUAL(poll_until(ch, fd, MESSIP_MSG_DISMISSED, 5000, &type),
			MESSIP_MSG_DISMISSED);
	if (idx >= 0) {
		CU_ASSERT_EQUAL(messip_reply(ch, idx, 0, NULL, 0, 1000), -1);
		CU_ASSERT_EQUAL(errno, ESRCH);
	}
	api_gate_close(&held);
	messip_disconnect(cnx, 2000);
}

/* ---- the table, run on both paths ---------------------------------------- */

#define BOTH(fn)                                                               \
	static void fn##_shm(void)                                             \
	{                                                                      \
		cur = P_SHM;                                                   \
		path_env();                                                    \
		fn();                                                          \
		unsetenv("MESSIP_NO_SHM");                                     \
	}                                                                      \
	static void fn##_tcp(void)                                             \
	{                                                                      \
		cur = P_TCP;                                                   \
		path_env();                                                    \
		fn();                                                          \
		unsetenv("MESSIP_NO_SHM");                                     \
	}

BOTH(case_sizes)
BOTH(case_out_of_order)
BOTH(case_timeout_late_reply)
BOTH(case_server_killed)
BOTH(case_client_killed)
BOTH(case_buffered)
BOTH(case_zero_copy)
BOTH(case_poll_loop)

/* ---- path selection ------------------------------------------------------ */

/* One round trip, and the path it took. */
static int probe_path(const char *name)
{
	messip_cnx_t *cnx = api_connect("prober");
	messip_channel_t *ch = cnx ? must_locate(cnx, name) : NULL;
	int32_t answer = -1;
	int path = -1;

	if (ch &&
	    messip_send(ch, T_ECHO, "x", 1, &answer, NULL, 0, 5000) == 0 &&
	    answer == 1)
		path = messip_channel_path(ch);
	if (cnx)
		messip_disconnect(cnx, 2000);
	return path;
}

static void test_path_selection(void)
{
	struct api_gate ready;
	struct srv_arg a = {"s-path", 0, &ready, MESSIP_PATH_SHM, NULL};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pid_t pid;

	unsetenv("MESSIP_NO_SHM");
	api_gate_init(&ready);
	pid = fork_server(echo_server, &a);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	/* Same host. */
	CU_ASSERT_EQUAL(probe_path("s-path"), MESSIP_PATH_SHM);
	/* The client asks for TCP: served over TCP by a server that has a
	 * segment. */
	setenv("MESSIP_NO_SHM", "1", 1);
	CU_ASSERT_EQUAL(probe_path("s-path"), MESSIP_PATH_TCP);
	unsetenv("MESSIP_NO_SHM");
	/* "0" does not count. */
	setenv("MESSIP_NO_SHM", "0", 1);
	CU_ASSERT_EQUAL(probe_path("s-path"), MESSIP_PATH_SHM);
	unsetenv("MESSIP_NO_SHM");
	cnx = api_connect("quitter");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = must_locate(cnx, "s-path");
	CU_ASSERT_FATAL(ch != NULL);
	quit(ch, 0);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);

	/* The server without a segment: every client on TCP. */
	setenv("MESSIP_NO_SHM", "1", 1);
	a.name = "s-path-tcp";
	a.expect = MESSIP_PATH_TCP;
	pid = fork_server(echo_server, &a);
	unsetenv("MESSIP_NO_SHM");
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	CU_ASSERT_EQUAL(segments_of(pid, NULL, 0), 0);
	CU_ASSERT_EQUAL(probe_path("s-path-tcp"), MESSIP_PATH_TCP);
	cnx = api_connect("quitter");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = must_locate(cnx, "s-path-tcp");
	CU_ASSERT_FATAL(ch != NULL);
	quit(ch, 0);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
	CU_ASSERT_EQUAL(messip_channel_path(NULL), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	api_gate_close(&ready);
}

/* ---- separate /dev/shm: network namespaces (root) ------------------------ */

static struct mp_netns net;
static bool net_up;
static char net_ref[64];

static void net_cleanup(void)
{
	if (net_up)
		mp_netns_teardown(&net);
	net_up = false;
}

static messip_cnx_t *net_connect(const char *id)
{
	for (int i = 0; i < 100; i++) {
		messip_cnx_t *cnx = messip_connect(net_ref, id, 1000);

		if (cnx)
			return cnx;
		api_sleep_ms(50);
	}
	return NULL;
}

static struct api_gate net_ready, net_done;

static void net_server(void *p)
{
	messip_cnx_t *cnx;
	messip_channel_t *ch;

	(void)p;
	CHILD_CHECK(mp_netns_enter(&net, 1) == 0);
	cnx = net_connect("nsrv");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "s-net", 5000, 0);
	CHILD_CHECK(ch);
	/* It has a segment -- in a /dev/shm the client cannot see. */
	CHILD_CHECK(messip_channel_path(ch) == MESSIP_PATH_SHM);
	api_gate_signal(&net_ready);
	for (;;) {
		char buf[16];
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 10000);

		CHILD_CHECK(r != MESSIP_MSG_TIMEOUT && r != -1);
		if (r < 0)
			continue;
		CHILD_CHECK(messip_reply(ch, r, 1, NULL, 0, 2000) == 0);
		if (type == T_QUIT)
			break;
	}
	messip_disconnect(cnx, 2000);
}

static void net_client(void *p)
{
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer = 0;

	(void)p;
	CHILD_CHECK(mp_netns_enter(&net, 2) == 0);
	cnx = net_connect("ncli");
	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "s-net", 5000);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_send(ch, T_ECHO, "x", 1, &answer, NULL, 0, 5000) ==
		    0);
	CHILD_CHECK(messip_channel_path(ch) == MESSIP_PATH_TCP);
	CHILD_CHECK(messip_buffered_send(ch, 1, "y", 1, 5000) >= 0);
	CHILD_CHECK(messip_send(ch, T_QUIT, NULL, 0, &answer, NULL, 0, 5000) ==
		    0);
	messip_disconnect(cnx, 2000);
}

static void test_separate_shm(void)
{
	char conf[128];
	pid_t mgr, srv, cli;
	FILE *f;

	if (!mp_netns_available()) {
		fprintf(stderr, "  (skipped: needs root and iproute2)\n");
		return;
	}
	unsetenv("MESSIP_NO_SHM");
	mp_test_on_cleanup(net_cleanup);
	CU_ASSERT_FATAL(mp_netns_setup(&net, 3) == 0);
	net_up = true;
	snprintf(conf, sizeof(conf), "/tmp/messip-test-%ld-shmns.conf",
		 (long)getpid());
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f,
		"listen %s:9200\nallow_remote yes\nstatus_listen off\n"
		"workers 1\nlog_level warning\n",
		net.addr[0]);
	fclose(f);
	mgr = mp_test_fork();
	if (mgr == 0) {
		const char *bin = getenv("MP_MGR_BIN");

		if (!bin)
			bin = "./mgrd/messip-mgr";
		if (mp_netns_enter(&net, 0) < 0)
			_exit(126);
		execl(bin, bin, "-f", "-c", conf, (char *)NULL);
		_exit(127);
	}
	snprintf(net_ref, sizeof(net_ref), "%s:9200", net.addr[0]);
	api_gate_init(&net_ready);
	api_gate_init(&net_done);
	srv = api_fork(net_server, NULL);
	CU_ASSERT(api_gate_wait(&net_ready, 15000));
	cli = api_fork(net_client, NULL);
	CU_ASSERT(api_child_ok(cli, 20000));
	CU_ASSERT(api_child_ok(srv, 10000));
	kill(mgr, SIGTERM);
	if (mp_test_wait(mgr, 5000) == -1)
		mp_test_kill(mgr);
	unlink(conf);
	api_gate_close(&net_ready);
	api_gate_close(&net_done);
	net_cleanup();
}

/* ---- a process scribbles over the segment -------------------------------- */

/* Map the segment of server pid; NULL if none. */
static uint8_t *map_segment(pid_t pid, size_t *size)
{
	char name[300], path[320];
	struct stat st;
	void *p;
	int fd;

	if (!segments_of(pid, name, sizeof(name)))
		return NULL;
	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return NULL;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return NULL;
	*size = (size_t)st.st_size;
	return p;
}

static void victim_of_scribble(void *p)
{
	messip_cnx_t *cnx = api_connect("hit");
	messip_channel_t *ch;
	int32_t answer;

	(void)p;
	CHILD_CHECK(cnx);
	ch = must_locate(cnx, "s-scribble");
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_channel_path(ch) == MESSIP_PATH_SHM);
	CHILD_CHECK(messip_send(ch, T_HOLD, "hold", 4, &answer, NULL, 0,
				10000) == -1);
	CHILD_CHECK(errno == EBADMSG);
	messip_disconnect(cnx, 1000);
}

static void test_scribble(void)
{
	struct api_gate ready, held;
	struct srv_arg a = {"s-scribble", 0, &ready, MESSIP_PATH_SHM, &held};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	struct mp_chseg_hdr *h;
	uint8_t *base;
	size_t size = 0;
	int32_t answer;
	char in[8];
	pid_t srv, vic;
	int hit = 0, ok;

	unsetenv("MESSIP_NO_SHM");
	api_gate_init(&ready);
	api_gate_init(&held);
	srv = fork_server(echo_server, &a);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	vic = api_fork(victim_of_scribble, NULL);
	/* Its request is in the server's hands. */
	CU_ASSERT_FATAL(api_gate_wait(&held, 5000));
	cnx = api_connect("scribbler");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = must_locate(cnx, "s-scribble");
	CU_ASSERT_FATAL(ch != NULL);
	base = map_segment(srv, &size);
	CU_ASSERT_FATAL(base != NULL);
	h = (struct mp_chseg_hdr *)(base + MP_SHM_HDR_SIZE);
	/* Wait for the victim's request to sit in a slot, then break its
	 * state word. */
	for (int t = 0; t < 200 && !hit; t++) {
		for (uint32_t i = 0; i < h->nslots && i < MP_CHSEG_MAX_SLOTS;
		     i++) {
			uint32_t *w = (uint32_t *)(base + h->slots_off +
						   (size_t)i * h->block);
			uint32_t v = __atomic_load_n(w, __ATOMIC_ACQUIRE);

			if ((v & MP_CHSEG_ST_MASK) == MP_CHSEG_ST_REQ) {
				__atomic_store_n(w, 0xffffffffu,
						 __ATOMIC_RELEASE);
				hit++;
			}
		}
		if (!hit)
			api_sleep_ms(10);
	}
	CU_ASSERT(hit >= 1);
	CU_ASSERT(api_child_ok(vic, 5000)); /* it got EBADMSG */
	/* The server goes on serving. */
	memset(in, 0, sizeof(in));
	CU_ASSERT_EQUAL(messip_send(ch, T_ECHO, "ok?", 3, &answer, in,
				    sizeof(in), 5000),
			0);
	CU_ASSERT(memcmp(in, "ok?", 3) == 0);
	CU_ASSERT_EQUAL(messip_channel_path(ch), MESSIP_PATH_SHM);
	/* Garbage over every slot's control line: whatever it hit, the
	 * server recovers and a request gets through again. */
	for (uint32_t i = 0; i < h->nslots && i < MP_CHSEG_MAX_SLOTS; i++) {
		uint8_t *ctl = base + h->slots_off + (size_t)i * h->block;

		for (int k = 0; k < 64; k++)
			ctl[k] = (uint8_t)mp_test_rand();
	}
	ok = 0;
	for (int t = 0; t < 5 && !ok; t++) {
		int rc = messip_send(ch, T_ECHO, "abc", 3, &answer, in,
				     sizeof(in), 2000);

		if (rc == 0)
			ok = memcmp(in, "abc", 3) == 0;
		else
			CU_ASSERT(errno == EBADMSG);
	}
	CU_ASSERT(ok);
	munmap(base, size);
	/* The held (reset) request: its reply is ESRCH in the server. */
	quit(ch, 1);
	CU_ASSERT(api_child_ok(srv, 5000));
	api_gate_close(&ready);
	api_gate_close(&held);
	messip_disconnect(cnx, 2000);
}

/* ---- nothing left behind ------------------------------------------------- */

static void test_nothing_left(void)
{
	int left = 0;

	for (int i = 0; i < nsrvs; i++) {
		int n = segments_of(srvs[i], NULL, 0);

		if (n)
			fprintf(stderr, "  %d segment(s) of %ld left\n", n,
				(long)srvs[i]);
		left += n;
	}
	CU_ASSERT_EQUAL(left, 0);
}

static const struct mp_test_case tests[] = {
	{"path: same host shm, MESSIP_NO_SHM tcp", test_path_selection},
	{"path: separate /dev/shm (namespaces) tcp", test_separate_shm},
	{"shm: sizes 0..64K, vectors, truncation, ping", case_sizes_shm},
	{"tcp: sizes 0..64K, vectors, truncation, ping", case_sizes_tcp},
	{"shm: replies out of order, indices reused", case_out_of_order_shm},
	{"tcp: replies out of order, indices reused", case_out_of_order_tcp},
	{"shm: timeout, late reply discarded", case_timeout_late_reply_shm},
	{"tcp: timeout, late reply discarded", case_timeout_late_reply_tcp},
	{"shm: server killed while client waits: ESRCH < 1 s",
	 case_server_killed_shm},
	{"tcp: server killed while client waits: ESRCH < 1 s",
	 case_server_killed_tcp},
	{"shm: client killed holding a request: DISMISSED once, ESRCH",
	 case_client_killed_shm},
	{"tcp: client killed holding a request: DISMISSED once, ESRCH",
	 case_client_killed_tcp},
	{"shm: buffered order, sender, back-pressure", case_buffered_shm},
	{"tcp: buffered order, sender, back-pressure", case_buffered_tcp},
	{"shm: zero-copy round trips", case_zero_copy_shm},
	{"tcp: zero-copy round trips", case_zero_copy_tcp},
	{"shm: server in a poll loop (messip_channel_fd)", case_poll_loop_shm},
	{"tcp: server in a poll loop (messip_channel_fd)", case_poll_loop_tcp},
	{"shm: a process scribbles over the segment", test_scribble},
	{"no /dev/shm object left", test_nothing_left},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_shm", 120);
	api_verbose();
	unsetenv("MESSIP_NO_SHM");
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_shm", tests);
	api_stop_mgr();
	return rc;
}
