/*
 * test_fault_mgr — the whole manager goes away under live programs and
 * comes back on the same port (messip.h, "Manager failures"): the
 * libraries' resume is answered ESTALE by the new manager, so each takes
 * a new registration and declares its channels again under the same
 * names; direct (synchronous) traffic never stops.
 *
 *   - stopped cleanly (SIGTERM) and restarted within the grace period:
 *     the segment is removed and made again, the server's name comes
 *     back, buffered messages flow again, nobody sees an error or event;
 *   - killed outright (SIGKILL, master and workers) and restarted: the
 *     stale segment is taken over, and the same holds;
 *   - restarted while the server naps: the client re-registers first and
 *     its buffered sends wait for the channel (up to 5 s) and get
 *     through; with the server dead instead, ESRCH after those 5 s, for
 *     good (a later server of that name is reached by connecting again);
 *   - stopped for longer than the grace period, then restarted: calls
 *     that need the manager fail with ESHUTDOWN, the server is told once,
 *     the connection stays given up (ESHUTDOWN at once, even with the
 *     manager back), and a new connection works.
 *
 * Covered elsewhere: workers killed under traffic (test_api_resume,
 * test_mgr_proc), the manager gone for good (test_api_resume), the master
 * killed and a second master (test_mgr_proc).
 */
#include "config.h"

#include "test_fault_util.h"

#define T_ECHO	 1
#define T_QUIT	 2
#define GRACE_MS 5000 /* resume_grace_ms default, and the library's */

struct rs_arg {
	const char *ref;
	const char *name;
	struct api_gate *ready;
};

/* What the server reports when told to quit. */
struct rs_report {
	int32_t buffered, errors, shutdowns, events;
};

/* Serves echo (answer: buffered messages so far) until T_QUIT. */
static void restart_server(void *p)
{
	struct rs_arg *a = p;
	messip_cnx_t *cnx = messip_connect(a->ref, "rsrv", 5000);
	struct rs_report rep = {0};
	messip_channel_t *ch;
	int64_t end;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	end = api_now_ms() + 45000;
	while (api_now_ms() < end) {
		int32_t type = 0;
		char buf[64];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 500);

		if (r == MESSIP_MSG_TIMEOUT)
			continue;
		if (r == -1) {
			if (errno == ESHUTDOWN)
				rep.shutdowns++;
			else
				rep.errors++;
			continue;
		}
		if (r == MESSIP_MSG_NOREPLY) {
			rep.buffered++;
			continue;
		}
		if (r < 0) {
			fprintf(stderr, "restart server: event %d from %s\n", r,
				ch->remote_id);
			rep.events++;
			continue;
		}
		if (type == T_QUIT) {
			CHILD_CHECK(messip_reply(ch, r, 0, &rep, sizeof(rep),
						 2000) == 0);
			break;
		}
		CHILD_CHECK(messip_reply(ch, r, rep.buffered, buf, ch->datalenr,
					 2000) == 0);
	}
	messip_disconnect(cnx, 1000);
}

/* Echo; the server's count of buffered messages, or -1. */
static int echo(messip_channel_t *ch)
{
	int32_t answer = -1;
	char buf[8] = "";

	if (messip_send(ch, T_ECHO, "ping", 5, &answer, buf, sizeof(buf),
			2000) != 0 ||
	    strcmp(buf, "ping") != 0)
		return -1;
	return answer;
}

/* Wait until the server counted n buffered messages. */
static int wait_count(messip_channel_t *ch, int n, int timeout_ms)
{
	int64_t end = api_now_ms() + timeout_ms;
	int c = -1;

	while (api_now_ms() < end) {
		c = echo(ch);
		if (c >= n)
			break;
		api_sleep_ms(20);
	}
	return c;
}

static int quit_server(messip_channel_t *ch, struct rs_report *rep)
{
	int32_t answer = -1;

	memset(rep, 0, sizeof(*rep));
	return messip_send(ch, T_QUIT, NULL, 0, &answer, rep, sizeof(*rep),
			   3000);
}

/*
 * A manager on a free port with `workers` workers, a server process
 * running server(a) that declares a->name, and a client connection cli_id
 * with a handle on that channel.  Returns the server's pid.
 */
static pid_t start_trio(struct mp_mgrproc *m, int workers,
			void (*server)(void *), struct rs_arg *a,
			const char *cli_id, messip_cnx_t **cnx,
			messip_channel_t **ch)
{
	pid_t srv;

	CU_ASSERT_FATAL(fault_mgr_start_on(m, 0, workers, NULL) == 0);
	a->ref = m->ref;
	api_gate_init(a->ready);
	srv = api_fork(server, a);
	CU_ASSERT_FATAL(api_gate_wait(a->ready, 10000));
	*cnx = messip_connect(m->ref, cli_id, 5000);
	CU_ASSERT_FATAL(*cnx != NULL);
	*ch = messip_channel_connect(*cnx, a->name, 5000);
	CU_ASSERT_FATAL(*ch != NULL);
	return srv;
}

/* Kill a manager outright: master and workers, no clean-up. */
static void kill_manager(struct mp_mgrproc *m)
{
	pid_t w[64];
	int n;

	/* Freeze them all first: a worker that saw its master die would
	 * tidy up (remove the segment), which a crash does not. */
	kill(m->pid, SIGSTOP);
	n = fault_children_of(m->pid, w, 64);
	for (int i = 0; i < n; i++)
		kill(w[i], SIGSTOP);
	for (int i = 0; i < n; i++)
		kill(w[i], SIGKILL);
	kill(m->pid, SIGKILL);
	mp_test_kill(m->pid);
	m->pid = 0;
	unlink(m->conf);
	api_sleep_ms(50); /* the workers are gone too */
}

static void restart_case(int hard)
{
	struct mp_mgrproc m, m2;
	struct api_gate ready;
	struct rs_arg ra = {NULL, "f-restart", &ready};
	struct rs_report rep;
	messip_cnx_t *cnx, *probe;
	messip_channel_t *ch, *pch = NULL;
	int64_t t0, t_back, t_name = -1;
	pid_t srv;
	int port;

	srv = start_trio(&m, 2, restart_server, &ra, "rcli", &cnx, &ch);
	port = m.port;
	CU_ASSERT(messip_buffered_send(ch, 1, "one", 3, 2000) >= 0);
	CU_ASSERT_EQUAL(wait_count(ch, 1, 3000), 1);

	t0 = api_now_ms();
	if (hard) {
		kill_manager(&m);
		/* What a crash leaves: the segment. */
		CU_ASSERT(fault_mgr_segment_left(port));
	} else {
		kill(m.pid, SIGTERM);
		CU_ASSERT(mp_test_wait(m.pid, 5000) != -1);
		m.pid = 0;
		unlink(m.conf);
		CU_ASSERT(!fault_mgr_segment_left(port));
	}
	/* No manager: synchronous traffic goes on. */
	CU_ASSERT_EQUAL(echo(ch), 1);
	CU_ASSERT_EQUAL(fault_mgr_start_on(&m2, port, 2, NULL), 0);
	t_back = api_now_ms() - t0;
	CU_ASSERT(t_back < GRACE_MS / 2);

	/* The server declares its channel again by itself. */
	probe = messip_connect(m2.ref, "probe", 2000);
	CU_ASSERT_PTR_NOT_NULL(probe);
	if (probe) {
		pch = messip_channel_locate(probe, "f-restart", GRACE_MS);
		t_name = api_now_ms() - t0;
	}
	CU_ASSERT_PTR_NOT_NULL(pch);
	/* Then the client's buffered messages reach it again. */
	CU_ASSERT(messip_buffered_send(ch, 2, "two", 3, GRACE_MS) >= 0);
	CU_ASSERT_EQUAL(wait_count(ch, 2, 3000), 2);
	if (pch)
		CU_ASSERT(messip_buffered_send(pch, 3, "three", 5, 2000) >= 0);
	CU_ASSERT_EQUAL(wait_count(ch, pch ? 3 : 2, 3000), pch ? 3 : 2);
	/* The client's own registration is new and works. */
	CU_ASSERT_PTR_NOT_NULL(
		messip_channel_create(cnx, "f-restart-c", GRACE_MS, 0));
	CU_ASSERT_EQUAL(messip_death_notify(cnx, 2000, 0), 0);
	fprintf(stderr,
		"  manager %s: back after %lld ms, name back after %lld ms\n",
		hard ? "killed" : "stopped", (long long)t_back,
		(long long)t_name);
	/* Nobody saw an error or an event. */
	CU_ASSERT_EQUAL(quit_server(ch, &rep), 0);
	CU_ASSERT_EQUAL(rep.buffered, pch ? 3 : 2);
	CU_ASSERT_EQUAL(rep.errors, 0);
	CU_ASSERT_EQUAL(rep.shutdowns, 0);
	CU_ASSERT_EQUAL(rep.events, 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	if (probe)
		CU_ASSERT_EQUAL(messip_disconnect(probe, 2000), 0);
	CU_ASSERT_EQUAL(messip_disconnect(cnx, 2000), 0);
	CU_ASSERT(mp_mgrproc_stop(&m2) != -1);
	CU_ASSERT(!fault_mgr_segment_left(port));
	fault_mgr_segment_remove(port);
	api_gate_close(&ready);
}

static void test_restart_sigterm(void)
{
	restart_case(0);
}

static void test_restart_sigkill(void)
{
	restart_case(1);
}

FAULT_BOTH_PATHS(test_restart_sigterm)
FAULT_BOTH_PATHS(test_restart_sigkill)

/* ---- away for longer than the grace period ------------------------------ */

static void test_away_past_grace(void)
{
	struct mp_mgrproc m, m2;
	struct api_gate ready;
	struct rs_arg ra = {NULL, "f-away", &ready};
	struct rs_report rep;
	messip_cnx_t *cnx, *fresh;
	messip_channel_t *ch;
	int64_t t0, dt;
	pid_t srv;
	int port;

	srv = start_trio(&m, 1, restart_server, &ra, "awaycli", &cnx, &ch);
	port = m.port;
	t0 = api_now_ms();
	CU_ASSERT(mp_mgrproc_stop(&m) != -1);
	/* A call that needs the manager waits out the grace period. */
	CU_ASSERT_PTR_NULL(
		messip_channel_create(cnx, "f-away1", 3 * GRACE_MS, 0));
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	CU_ASSERT(dt >= GRACE_MS - 200 && dt < GRACE_MS + 2000);
	fprintf(stderr, "  ESHUTDOWN after %lld ms\n", (long long)dt);
	/* The manager comes back: this connection stays given up. */
	CU_ASSERT_EQUAL(fault_mgr_start_on(&m2, port, 1, NULL), 0);
	t0 = api_now_ms();
	CU_ASSERT_PTR_NULL(messip_channel_create(cnx, "f-away2", 2000, 0));
	CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	CU_ASSERT_EQUAL(messip_death_notify(cnx, 2000, 1), -1);
	CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	if (getenv("MESSIP_NO_SHM")) {
		/* Through the manager: given up too.  (On the same host a
		 * buffered message goes through the channel's segment and
		 * needs no manager.) */
		CU_ASSERT_EQUAL(messip_buffered_send(ch, 1, "x", 1, 2000), -1);
		CU_ASSERT_EQUAL(errno, ESHUTDOWN);
	}
	CU_ASSERT(api_now_ms() - t0 < 500);
	/* Direct traffic never needed it; the server was told once. */
	CU_ASSERT(echo(ch) >= 0);
	/* A new connection is a new registration on the new manager; the
	 * given-up server's name is not there. */
	fresh = messip_connect(m2.ref, "fresh", 2000);
	CU_ASSERT_PTR_NOT_NULL(fresh);
	if (fresh) {
		CU_ASSERT_PTR_NULL(
			messip_channel_connect(fresh, "f-away", 500));
		CU_ASSERT_EQUAL(errno, ENOENT);
		CU_ASSERT_PTR_NOT_NULL(
			messip_channel_create(fresh, "f-away", 2000, 0));
		CU_ASSERT_EQUAL(messip_disconnect(fresh, 2000), 0);
	}
	CU_ASSERT_EQUAL(quit_server(ch, &rep), 0);
	CU_ASSERT_EQUAL(rep.shutdowns, 1);
	CU_ASSERT_EQUAL(rep.errors, 0);
	CU_ASSERT_EQUAL(rep.events, 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	CU_ASSERT_EQUAL(messip_disconnect(cnx, 1000), 0);
	CU_ASSERT(mp_mgrproc_stop(&m2) != -1);
	CU_ASSERT(!fault_mgr_segment_left(port));
	fault_mgr_segment_remove(port);
	api_gate_close(&ready);
}

FAULT_BOTH_PATHS(test_away_past_grace)

/* ---- the client re-registers before the server -------------------------- */

#define T_NAP 7
#define T_COUNT 9 /* any other type: the server answers its count */

/* Serves like restart_server, but naps 2 s (outside the library) when
 * told to by a buffered T_NAP: it notices the restart late. */
static void napping_server(void *p)
{
	struct rs_arg *a = p;
	messip_cnx_t *cnx = messip_connect(a->ref, "napper", 5000);
	messip_channel_t *ch;
	int got = 0;
	int64_t end;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	end = api_now_ms() + 30000;
	while (api_now_ms() < end) {
		int32_t type = 0;
		char buf[64];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 500);

		if (r == MESSIP_MSG_NOREPLY && type == T_NAP) {
			api_sleep_ms(2000);
			continue;
		}
		if (r == MESSIP_MSG_NOREPLY)
			got++;
		if (r >= 0) {
			messip_reply(ch, r, got, NULL, 0, 2000);
			if (type == T_QUIT)
				break;
		}
	}
	messip_disconnect(cnx, 1000);
}

/*
 * The outcome (mp_chan.h, mp_chan_cli_handle): a client whose channel is
 * not declared again yet when it re-registers keeps looking for it for
 * MP_RELOCATE_MS (5 s, the grace period); a buffered send meanwhile waits
 * for it within its own timeout, and the handle keeps working.
 */
static void test_restart_client_first(void)
{
	struct mp_mgrproc m, m2;
	struct api_gate ready;
	struct rs_arg na = {NULL, "f-nap", &ready};
	messip_cnx_t *cnx;
	messip_channel_t *ch, *again;
	int32_t answer = -1;
	int rc, port;
	pid_t srv;

	srv = start_trio(&m, 1, napping_server, &na, "early", &cnx, &ch);
	port = m.port;
	CU_ASSERT(messip_buffered_send(ch, T_NAP, NULL, 0, 2000) >= 0);
	api_sleep_ms(200); /* the server naps */
	CU_ASSERT(mp_mgrproc_stop(&m) != -1);
	CU_ASSERT_FATAL(fault_mgr_start_on(&m2, port, 1, NULL) == 0);
	/* We notice first (the server naps for 2 s more): the channel is
	 * not there yet when we connect it again.  The server is alive and
	 * comes back well within the window and the call's timeout. */
	errno = 0;
	rc = messip_buffered_send(ch, 1, "x", 1, 4000);
	fprintf(stderr, "  buffered send right after the restart: %d (%s)\n",
		rc, rc < 0 ? strerror(errno) : "ok");
	CU_ASSERT(rc >= 0);
	api_sleep_ms(500);
	errno = 0;
	rc = messip_buffered_send(ch, 1, "y", 1, 2000);
	CU_ASSERT(rc >= 0);
	/* Connecting by name again gives the same, working handle. */
	again = messip_channel_connect(cnx, "f-nap", 2000);
	CU_ASSERT(again == ch);
	if (again)
		CU_ASSERT(messip_buffered_send(again, 1, "z", 1, 2000) >= 0);
	/* All three arrive (the answer is the server's count).  A buffered
	 * send may return before the manager delivers (pipelined), so ask
	 * until the count is there or 2 s passed. */
	for (int64_t end = api_now_ms() + 2000; api_now_ms() < end;) {
		CU_ASSERT_EQUAL_FATAL(messip_send(ch, T_COUNT, NULL, 0, &answer, NULL,
						  0, 3000),
				      0);
		if (answer >= (again ? 3 : 2))
			break;
		api_sleep_ms(20);
	}
	CU_ASSERT_EQUAL(answer, again ? 3 : 2);
	CU_ASSERT_EQUAL(
		messip_send(ch, T_QUIT, NULL, 0, &answer, NULL, 0, 3000), 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	messip_disconnect(cnx, 2000);
	mp_mgrproc_stop(&m2);
	fault_mgr_segment_remove(port);
	api_gate_close(&ready);
}

/*
 * The other outcome: the server died with the manager and does not come
 * back -> ESRCH once the window is over, for good: a server that takes
 * the name later is not reached through the old handle, and connecting
 * again by name reaches it.
 */
static void test_restart_server_gone(void)
{
	struct mp_mgrproc m, m2;
	struct api_gate ready;
	struct rs_arg ra = {NULL, "f-gone", &ready};
	struct rs_report rep;
	messip_cnx_t *cnx;
	messip_channel_t *ch, *ch2;
	int64_t t0, dt;
	pid_t srv, srv2;
	int rc, port;

	srv = start_trio(&m, 1, restart_server, &ra, "gonecli", &cnx, &ch);
	port = m.port;
	CU_ASSERT(messip_buffered_send(ch, 1, "a", 1, 2000) >= 0);
	CU_ASSERT(mp_mgrproc_stop(&m) != -1);
	mp_test_kill(srv);
	CU_ASSERT_FATAL(fault_mgr_start_on(&m2, port, 1, NULL) == 0);
	t0 = api_now_ms();
	errno = 0;
	rc = messip_buffered_send(ch, 1, "b", 1, 3 * GRACE_MS);
	dt = api_now_ms() - t0;
	fprintf(stderr, "  server gone: buffered send %d (%s) after %lld ms\n",
		rc, rc < 0 ? strerror(errno) : "ok", (long long)dt);
	CU_ASSERT_EQUAL(rc, -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT(dt < GRACE_MS + 2000);
	/* For good, at once. */
	t0 = api_now_ms();
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 1, "c", 1, 2000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT(api_now_ms() - t0 < 500);
	/* A new server of that name, after the window: the old handle
	 * stays given up. */
	ra.ref = m2.ref;
	srv2 = api_fork(restart_server, &ra);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 1, "d", 1, 2000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	/* Connecting by name again does. */
	ch2 = messip_channel_connect(cnx, "f-gone", 2000);
	CU_ASSERT_PTR_NOT_NULL(ch2);
	if (ch2) {
		CU_ASSERT(messip_buffered_send(ch2, 1, "e", 1, 2000) >= 0);
		CU_ASSERT_EQUAL(wait_count(ch2, 1, 3000), 1);
		CU_ASSERT_EQUAL(quit_server(ch2, &rep), 0);
		CU_ASSERT_EQUAL(rep.buffered, 1); /* only "e" */
		CU_ASSERT_EQUAL(rep.errors, 0);
	}
	CU_ASSERT(api_child_ok(srv2, 5000));
	messip_disconnect(cnx, 2000);
	mp_mgrproc_stop(&m2);
	fault_mgr_segment_remove(port);
	api_gate_close(&ready);
}

FAULT_TCP_PATH(test_restart_client_first)
FAULT_TCP_PATH(test_restart_server_gone)

static const struct mp_test_case tests[] = {
	{"manager stopped and restarted within the grace (shared memory): "
	 "clients re-register, names and buffered traffic come back",
	 test_restart_sigterm_shm},
	{"manager stopped and restarted within the grace (TCP): clients "
	 "re-register, names and buffered traffic come back",
	 test_restart_sigterm_tcp},
	{"manager killed and restarted (shared memory): stale segment taken "
	 "over, clients re-register",
	 test_restart_sigkill_shm},
	{"manager killed and restarted (TCP): stale segment taken over, "
	 "clients re-register",
	 test_restart_sigkill_tcp},
	{"manager away past the grace (shared memory): ESHUTDOWN, given up "
	 "for good, a new connection works",
	 test_away_past_grace_shm},
	{"manager away past the grace (TCP): ESHUTDOWN, given up for good, a "
	 "new connection works",
	 test_away_past_grace_tcp},
	{"manager restarted, client re-registers before the server (TCP): "
	 "its buffered sends wait for the channel and reach the server",
	 test_restart_client_first_tcp},
	{"manager restarted, server gone (TCP): buffered send ESRCH after the "
	 "window, for good; connecting again reaches a later server",
	 test_restart_server_gone_tcp},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_fault_mgr", 60);
	api_verbose();
	return mp_test_main("fault_mgr", tests);
}
