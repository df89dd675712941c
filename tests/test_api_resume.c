/*
 * test_api_resume — the manager fails under running programs:
 *   - every worker is killed (twice) while a client streams buffered and
 *     synchronous messages: the library resumes its registration, nothing
 *     is lost, nothing is reported to the programs;
 *   - a client that stays silent past the grace period gets a new
 *     registration when it next calls, and its channel handle works;
 *   - the whole manager dies: direct messages go on, calls that need the
 *     manager fail with ESHUTDOWN after the grace period;
 *   - a worker dies after the server library took an event but before the
 *     manager read its acknowledgement: the event comes again after the
 *     resume and the program still sees it once.
 */
#include "config.h"

#include <dirent.h>
#include <sys/mman.h>

#include "test_api_util.h"

#define N_MSG  400
#define T_SYNC 1
#define T_QUIT 2

/* Send sig to every child of the manager's master (its workers). */
static int signal_workers(pid_t master, int sig)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
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
		    sscanf(p + 2, "%*c %ld", &ppid) == 1 && ppid == master) {
			kill((pid_t)atol(de->d_name), sig);
			n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

static int kill_workers(pid_t master)
{
	return signal_workers(master, SIGKILL);
}

/* ---- workers die under traffic ------------------------------------------ */

struct stream_arg {
	const char *ref;
	const char *name;
};

/*
 * Counts buffered values: they must come in order, each at least once
 * (a request in flight when a worker died may be sent twice: counted in
 * dups).  Answers QUIT with the number received in order, or -1.
 */
static void stream_server(void *p)
{
	struct stream_arg *a = p;
	messip_cnx_t *cnx = messip_connect(a->ref, "stsrv", 5000);
	messip_channel_t *ch;
	int next = 0, dups = 0, events = 0, bad = 0;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	for (;;) {
		int32_t type = 0, v = -1;
		int r = messip_receive(ch, &type, &v, sizeof(v), 20000);

		CHILD_CHECK(r != MESSIP_MSG_TIMEOUT && r != -1);
		if (r == MESSIP_MSG_NOREPLY) {
			if (v == next)
				next++;
			else if (v == next - 1)
				dups++;
			else
				bad++;
			continue;
		}
		if (r < 0) {
			events++; /* DISMISSED etc.: must not happen */
			continue;
		}
		if (type == T_QUIT) {
			messip_reply(ch, r, bad || events ? -1 : next, NULL, 0,
				     2000);
			break;
		}
		CHILD_CHECK(messip_reply(ch, r, v, &v, sizeof(v), 5000) == 0);
	}
	if (dups)
		fprintf(stderr,
			"stream_server: %d duplicate(s) after "
			"resume\n",
			dups);
	messip_disconnect(cnx, 2000);
}

static void stream_client(void *p)
{
	struct stream_arg *a = p;
	messip_cnx_t *cnx = messip_connect(a->ref, "stcli", 5000);
	messip_channel_t *ch;
	int32_t answer = 0;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	for (int i = 0; i < N_MSG; i++) {
		CHILD_CHECK(messip_buffered_send(ch, 0, &i, sizeof(i), 10000) >=
			    0);
		if (i % 10 == 0) {
			int v = -1;

			CHILD_CHECK(messip_send(ch, T_SYNC, &i, sizeof(i),
						&answer, &v, sizeof(v),
						5000) == 0);
			CHILD_CHECK(answer == i && v == i);
		}
		api_sleep_ms(5);
	}
	CHILD_CHECK(messip_send(ch, T_QUIT, NULL, 0, &answer, NULL, 0, 10000) ==
		    0);
	if (answer != N_MSG)
		fprintf(stderr, "stream_client: server counted %d\n", answer);
	CHILD_CHECK(answer == N_MSG);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_workers_killed(void)
{
	struct stream_arg a = {api_mgr.ref, "t-stream"};
	messip_cnx_t *cnx = api_connect("observer");
	pid_t srv, cli;
	int n;

	CU_ASSERT_FATAL(cnx != NULL);
	srv = api_fork(stream_server, &a);
	CU_ASSERT_PTR_NOT_NULL(messip_channel_locate(cnx, "t-stream", 5000));
	cli = api_fork(stream_client, &a);
	api_sleep_ms(600);
	n = kill_workers(api_mgr.pid);
	CU_ASSERT(n >= 1);
	api_sleep_ms(700);
	n = kill_workers(api_mgr.pid);
	CU_ASSERT(n >= 1);
	CU_ASSERT(api_child_ok(cli, 30000));
	CU_ASSERT(api_child_ok(srv, 5000));
	/* The observer resumed too: its requests still work (its handle's
	 * server is gone: connecting again asks the manager afresh). */
	CU_ASSERT_PTR_NULL(messip_channel_connect(cnx, "t-stream", 3000));
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT_EQUAL(messip_disconnect(cnx, 2000), 0);
}

/* ---- silent past the grace period -----------------------------------------
 */

struct sleeper_arg {
	struct api_gate *ready;
	struct api_gate *go;
};

static void sleeper(void *p)
{
	struct sleeper_arg *a = p;
	messip_cnx_t *cnx = api_connect("sleeper");
	messip_channel_t *ch;
	int32_t answer = 0;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-sleep", 5000);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_buffered_send(ch, 1, "a", 1, 2000) >= 0);
	api_gate_signal(a->ready);
	CHILD_CHECK(api_gate_wait(a->go, 20000));
	/* Meanwhile our registration expired: the library notices, takes
	 * a new one and connects the channel again by itself. */
	CHILD_CHECK(messip_buffered_send(ch, 2, "b", 1, 5000) >= 0);
	CHILD_CHECK(messip_send(ch, 3, "c", 1, &answer, NULL, 0, 5000) == 0);
	CHILD_CHECK(answer == 3);
	CHILD_CHECK(messip_channel_disconnect(ch, 2000) == MESSIP_OK);
	messip_disconnect(cnx, 2000);
}

static void test_silent_past_grace(void)
{
	messip_cnx_t *cnx = api_connect("waker");
	struct api_gate ready, go;
	struct sleeper_arg sa = {&ready, &go};
	messip_channel_t *ch;
	int got[4] = {0}, dismissed = 0, disconnect = 0;
	int64_t end;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-sleep", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	api_gate_init(&go);
	pid = api_fork(sleeper, &sa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	kill_workers(api_mgr.pid);
	/* We keep receiving (and so resume); the sleeper does not, and is
	 * given up by the manager after its grace period. */
	end = api_now_ms() + 6500;
	while (api_now_ms() < end) {
		int32_t type = 0;
		char buf[8];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 200);

		if (r == MESSIP_MSG_NOREPLY && type >= 1 && type <= 3)
			got[type]++;
		if (r == MESSIP_MSG_DISMISSED)
			dismissed++;
	}
	CU_ASSERT_EQUAL(got[1], 1);
	CU_ASSERT_EQUAL(dismissed, 1);
	api_gate_signal(&go);
	end = api_now_ms() + 8000;
	while (api_now_ms() < end && !disconnect) {
		int32_t type = 0;
		char buf[8];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 200);

		if (r == MESSIP_MSG_NOREPLY && type >= 1 && type <= 3)
			got[type]++;
		if (r >= 0)
			messip_reply(ch, r, type, NULL, 0, 1000);
		if (r == MESSIP_MSG_DISCONNECT)
			disconnect++;
	}
	CU_ASSERT_EQUAL(got[2], 1);
	CU_ASSERT_EQUAL(disconnect, 1);
	CU_ASSERT(api_child_ok(pid, 5000));
	api_gate_close(&ready);
	api_gate_close(&go);
	messip_disconnect(cnx, 2000);
}

/* ---- the whole manager dies ------------------------------------------------
 */

static void lonely_server(void *p)
{
	const char *ref = p;
	messip_cnx_t *cnx = messip_connect(ref, "lonely", 5000);
	messip_channel_t *ch;
	int shutdowns = 0;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "t-lonely", 5000, 0);
	CHILD_CHECK(ch);
	for (;;) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, NULL, 0, 20000);

		if (r == -1) {
			CHILD_CHECK(errno == ESHUTDOWN);
			shutdowns++;
			continue;
		}
		CHILD_CHECK(r >= 0);
		CHILD_CHECK(messip_reply(ch, r, shutdowns, NULL, 0, 2000) == 0);
		if (type == T_QUIT)
			break;
	}
	CHILD_CHECK(shutdowns == 1); /* reported once */
	messip_disconnect(cnx, 1000);
}

static void test_manager_gone(void)
{
	struct mp_mgrproc m;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer = -1;
	char seg[64];
	int64_t t0, dt;
	pid_t pid;

	CU_ASSERT_FATAL(mp_mgrproc_start(&m, 1, "log_level error\n") == 0);
	/* Over TCP: a same-host client's buffered messages go into the
	 * server's segment and do not need the manager at all. */
	setenv("MESSIP_NO_SHM", "1", 1);
	cnx = messip_connect(m.ref, "survivor", 5000);
	CU_ASSERT_FATAL(cnx != NULL);
	pid = api_fork(lonely_server, m.ref);
	ch = messip_channel_locate(cnx, "t-lonely", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(
		messip_send(ch, T_SYNC, NULL, 0, &answer, NULL, 0, 2000), 0);
	/* The whole manager goes (SIGTERM: the master also removes its
	 * segment; nothing may be left in /dev/shm). */
	mp_mgrproc_stop(&m);
	snprintf(seg, sizeof(seg), "/messip-mgr-%d", m.port);
	shm_unlink(seg);
	/* Synchronous messages do not need the manager. */
	CU_ASSERT_EQUAL(
		messip_send(ch, T_SYNC, NULL, 0, &answer, NULL, 0, 2000), 0);
	/* Calls that need it fail once the grace period is over. */
	t0 = api_now_ms();
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 1, "x", 1, 20000), -1);
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	CU_ASSERT(dt >= 4000 && dt < 8000);
	if (dt < 4000 || dt >= 8000)
		fprintf(stderr, "ESHUTDOWN after %lld ms\n", (long long)dt);
	t0 = api_now_ms();
	CU_ASSERT_PTR_NULL(messip_channel_create(cnx, "t-late", 20000, 0));
	CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	CU_ASSERT_EQUAL(messip_death_notify(cnx, 1000, 1), -1);
	CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	CU_ASSERT(api_now_ms() - t0 < 500);
	/* Within a deadline shorter than the grace period: ETIMEDOUT. */
	/* The server told of it once, and still answers. */
	api_sleep_ms(1000);
	CU_ASSERT_EQUAL(
		messip_send(ch, T_QUIT, NULL, 0, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(answer, 1);
	CU_ASSERT(api_child_ok(pid, 5000));
	CU_ASSERT_EQUAL(messip_disconnect(cnx, 1000), 0);
	unsetenv("MESSIP_NO_SHM");
}

/* ---- an event whose acknowledgement is lost ------------------------------ */

static void test_event_once_across_resume(void)
{
	struct mp_mgrproc m;
	messip_cnx_t *srv, *cli;
	messip_channel_t *ch, *cc;
	int32_t type;
	int64_t t0;
	int r, n = 0;
	char buf[16];

	/* One worker: it serves both connections. */
	CU_ASSERT_FATAL(mp_mgrproc_start(&m, 1, "log_level error\n") == 0);
	srv = messip_connect(m.ref, "evsrv", 5000);
	cli = messip_connect(m.ref, "evcli", 5000);
	CU_ASSERT_FATAL(srv && cli);
	ch = messip_channel_create(srv, "t-evonce", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	cc = messip_channel_connect(cli, "t-evonce", 2000);
	CU_ASSERT_FATAL(cc != NULL);
	/* Answered: the DISCONNECT event left the worker in the same pass. */
	CU_ASSERT_EQUAL(messip_channel_disconnect(cc, 2000), MESSIP_OK);
	/* The worker stops reading: the library's acknowledgement of the
	 * event stays in its socket, and dies with it. */
	CU_ASSERT_FATAL(signal_workers(m.pid, SIGSTOP) == 1);
	r = messip_receive(ch, &type, buf, sizeof(buf), 2000);
	CU_ASSERT_EQUAL(r, MESSIP_MSG_DISCONNECT);
	CU_ASSERT_FATAL(signal_workers(m.pid, SIGKILL) == 1);
	/* The library resumes; the manager offers the event again. */
	t0 = api_now_ms();
	while (api_now_ms() - t0 < 3000) {
		r = messip_receive(ch, &type, buf, sizeof(buf), 500);
		if (r == MESSIP_MSG_DISCONNECT)
			n++;
	}
	CU_ASSERT_EQUAL(n, 0);
	/* And the link works again. */
	CU_ASSERT_PTR_NOT_NULL(messip_channel_create(srv, "t-evafter", 2000,
						     0));
	messip_disconnect(cli, 1000);
	messip_disconnect(srv, 1000);
	mp_mgrproc_stop(&m);
}

static const struct mp_test_case tests[] = {
	{"manager workers killed under traffic: resumed, nothing lost",
	 test_workers_killed},
	{"silent past the grace period: new registration",
	 test_silent_past_grace},
	{"manager gone: direct traffic goes on, ESHUTDOWN", test_manager_gone},
	{"event whose acknowledgement a dead worker lost: reported once",
	 test_event_once_across_resume},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_resume", 120);
	api_verbose();
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_resume", tests);
	api_stop_mgr();
	return rc;
}
