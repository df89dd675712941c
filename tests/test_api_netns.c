/*
 * test_api_netns — libmessip across three "hosts" (network namespaces,
 * each with its own /dev/shm): the manager on host 0, a server on host 1,
 * clients on host 2.  Synchronous, buffered and timer traffic crosses
 * them; a killed client is reported DISMISSED; when the client host's
 * link goes down, the server sees DISMISSED, a client blocked in a send
 * gets ESRCH, both within the documented 10 s, and the lost host's names
 * are freed.  Needs root (exit 77 otherwise).
 */
#include "config.h"

#include "mp_netns.h"
#include "test_api_util.h"

#define PORT	 9200
#define N_MSG	 50
#define T_ECHO	 1
#define T_HOLD	 2
#define T_TIMER	 77
#define BOUND_MS 10000

static struct mp_netns net;
static char ref[64];
static pid_t mgr_pid;

static messip_cnx_t *host_connect(const char *id)
{
	/* The manager starts in its own namespace: retry a little. */
	for (int i = 0; i < 100; i++) {
		messip_cnx_t *cnx = messip_connect(ref, id, 1000);

		if (cnx)
			return cnx;
		api_sleep_ms(50);
	}
	return NULL;
}

static int start_manager(void)
{
	char conf[128];
	FILE *f;

	snprintf(conf, sizeof(conf), "/tmp/messip-test-%ld-netns.conf",
		 (long)getpid());
	f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f,
		"listen %s:%d\nallow_remote yes\nstatus_listen off\n"
		"workers 2\nlog_level %s\n",
		net.addr[0], PORT,
		getenv("MP_TEST_VERBOSE") ? "debug" : "warning");
	fclose(f);
	mgr_pid = mp_test_fork();
	if (mgr_pid == 0) {
		const char *bin = getenv("MP_MGR_BIN");

		if (!bin)
			bin = "./mgrd/messip-mgr";
		if (mp_netns_enter(&net, 0) < 0)
			_exit(126);
		execl(bin, bin, "-f", "-c", conf, (char *)NULL);
		_exit(127);
	}
	snprintf(ref, sizeof(ref), "%s:%d", net.addr[0], PORT);
	return mgr_pid > 0 ? 0 : -1;
}

/* ---- host 1: the server ----------------------------------------------------
 */

static struct api_gate srv_ready;

static void server(void *arg)
{
	static char buf[4096];
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int echoed = 0, buffered = 0, timers = 0, held = -1;
	int victim_gone = 0, lost_gone = 0;
	int64_t end;

	(void)arg;
	CHILD_CHECK(mp_netns_enter(&net, 1) == 0);
	cnx = host_connect("server");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "t-hosts", 5000, 0);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_timer_create(ch, T_TIMER, 100, 100, 0) != NULL);
	api_gate_signal(&srv_ready);
	end = api_now_ms() + 45000;
	while (!(victim_gone && lost_gone)) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 1000);

		CHILD_CHECK(api_now_ms() < end);
		if (r == MESSIP_MSG_TIMER) {
			CHILD_CHECK(type == T_TIMER);
			timers++;
		} else if (r == MESSIP_MSG_NOREPLY) {
			CHILD_CHECK(type == buffered);
			CHILD_CHECK(strcmp(ch->remote_id, "victim") == 0);
			buffered++;
		} else if (r == MESSIP_MSG_DISMISSED) {
			if (strcmp(ch->remote_id, "victim") == 0)
				victim_gone++;
			else if (strcmp(ch->remote_id, "lost") == 0)
				lost_gone++;
			else
				CHILD_CHECK(!"DISMISSED from whom?");
		} else if (r >= 0 && type == T_ECHO) {
			CHILD_CHECK(messip_reply(ch, r, echoed++, buf,
						 ch->datalenr, 5000) == 0);
		} else if (r >= 0 && type == T_HOLD) {
			held = r; /* never answered: its client is cut off */
		} else {
			CHILD_CHECK(r == MESSIP_MSG_TIMEOUT ||
				    r == MESSIP_MSG_DISCONNECT);
		}
	}
	CHILD_CHECK(victim_gone == 1 && lost_gone == 1);
	CHILD_CHECK(echoed == N_MSG && buffered == N_MSG);
	CHILD_CHECK(timers >= 10);
	CHILD_CHECK(held >= 0);
	/* The lost host's channel is gone from the name space. */
	CHILD_CHECK(messip_channel_connect(cnx, "t-lostchan", 2000) == NULL &&
		    errno == ENOENT);
	messip_disconnect(cnx, 2000);
}

/* ---- host 2: clients --------------------------------------------------------
 */

static struct api_gate victim_done, lost_ready;

static void victim(void *arg)
{
	char out[1000], in[1000];
	messip_cnx_t *cnx;
	messip_channel_t *ch;

	(void)arg;
	CHILD_CHECK(mp_netns_enter(&net, 2) == 0);
	cnx = host_connect("victim");
	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-hosts", 5000);
	CHILD_CHECK(ch);
	for (int i = 0; i < N_MSG; i++) {
		int32_t answer = -1;

		memset(out, 'a' + i % 26, sizeof(out));
		CHILD_CHECK(messip_send(ch, T_ECHO, out, sizeof(out), &answer,
					in, sizeof(in), 5000) == 0);
		CHILD_CHECK(answer == i && memcmp(in, out, sizeof(in)) == 0);
		CHILD_CHECK(messip_buffered_send(ch, i, out, 100, 5000) >= 0);
	}
	CHILD_CHECK(messip_channel_ping(ch, 2000) == 0);
	api_gate_signal(&victim_done);
	api_sleep_ms(60000); /* until killed */
}

static void lost(void *arg)
{
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer;

	(void)arg;
	CHILD_CHECK(mp_netns_enter(&net, 2) == 0);
	cnx = host_connect("lost");
	CHILD_CHECK(cnx);
	CHILD_CHECK(messip_channel_create(cnx, "t-lostchan", 5000, 0) != NULL);
	ch = messip_channel_locate(cnx, "t-hosts", 5000);
	CHILD_CHECK(ch);
	api_gate_signal(&lost_ready);
	/* Blocked on a server that holds the request; then our link dies. */
	CHILD_CHECK(messip_send(ch, T_HOLD, "?", 1, &answer, NULL, 0,
				MESSIP_NOTIMEOUT) == -1);
	CHILD_CHECK(errno == ESRCH);
}

static void test_three_hosts(void)
{
	pid_t srv, vic, lst;
	int64_t t0, t_lost, t_srv;
	int st;

	api_gate_init(&srv_ready);
	api_gate_init(&victim_done);
	api_gate_init(&lost_ready);
	CU_ASSERT_FATAL(start_manager() == 0);
	srv = api_fork(server, NULL);
	CU_ASSERT_FATAL(api_gate_wait(&srv_ready, 15000));
	vic = api_fork(victim, NULL);
	CU_ASSERT_FATAL(api_gate_wait(&victim_done, 20000));
	/* A client process dies: DISMISSED (its host is still up). */
	mp_test_kill(vic);

	lst = api_fork(lost, NULL);
	CU_ASSERT_FATAL(api_gate_wait(&lost_ready, 15000));
	api_sleep_ms(300); /* its request reaches the server */
	CU_ASSERT_FATAL(mp_netns_link(&net, 2, 0) == 0);
	t0 = api_now_ms();

	st = mp_test_wait(lst, BOUND_MS + 3000);
	t_lost = api_now_ms() - t0;
	CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT(t_lost <= BOUND_MS);
	st = mp_test_wait(srv, BOUND_MS + 3000);
	t_srv = api_now_ms() - t0;
	CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT(t_srv <= BOUND_MS + 1000);
	fprintf(stderr,
		"link down: client ESRCH after %lld ms, server "
		"done after %lld ms\n",
		(long long)t_lost, (long long)t_srv);
	if (st == -1)
		mp_test_kill(srv);
	if (lst > 0 && t_lost > BOUND_MS + 3000)
		mp_test_kill(lst);
	kill(mgr_pid, SIGTERM);
	if (mp_test_wait(mgr_pid, 5000) == -1)
		mp_test_kill(mgr_pid);
	api_gate_close(&srv_ready);
	api_gate_close(&victim_done);
	api_gate_close(&lost_ready);
}

static const struct mp_test_case tests[] = {
	{"three hosts: traffic, client killed, client host cut off",
	 test_three_hosts},
	MP_TEST_END};

int main(void)
{
	char conf[128];
	int rc;

	mp_test_init("test_api_netns", 90);
	api_verbose();
	if (!mp_netns_available())
		return 77;
	if (mp_netns_setup(&net, 3) < 0)
		return 1;
	rc = mp_test_main("api_netns", tests);
	mp_netns_teardown(&net);
	snprintf(conf, sizeof(conf), "/tmp/messip-test-%ld-netns.conf",
		 (long)getpid());
	unlink(conf);
	return rc;
}
