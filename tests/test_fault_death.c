/*
 * test_fault_death — processes killed (SIGKILL) at the worst moment, with
 * real processes and a real manager:
 *
 *   - a client killed while its request still waits, unread, in the
 *     server's socket or its slot of the channel's segment: the server
 *     sees DISMISSED once and a reply to it fails with ESRCH, never
 *     "succeeds";
 *   - six clients killed at once, three whose requests the server holds
 *     and three whose requests it has not read yet: DISMISSED exactly once
 *     per client, every reply ESRCH, and the server serves the next one;
 *   - a server killed with six clients blocked in send (three requests
 *     held, three not yet accepted): each client gets ESRCH within 1 s;
 *   - a server killed with its buffered queue full and a sender parked on
 *     it: the parked sender and later senders get ESRCH, the name is
 *     freed, a new server of that name starts empty, and the old handle
 *     never reaches the new server.
 *
 * Each runs on both paths: same-host clients on the channel's shared
 * memory (the default), and on TCP (MESSIP_NO_SHM).
 *
 * Covered elsewhere (not repeated): one client killed while the server
 * holds its request, DISMISSED once, DISCONNECT once, DEATH_PROCESS, a
 * server dying or leaving while one client waits (test_api_fault.c).
 */
#include "config.h"

#include "test_fault_util.h"

#define T_HOLD	 1
#define T_ECHO	 2
#define T_LAST	 99
#define BOUND_MS 1000 /* same host: a death is seen at once */

/* ---- clients ------------------------------------------------------------ */

struct cli_arg {
	const char *name;
	char id[MESSIP_MAXLEN_ID + 1];
	struct api_gate *ready;
	struct fault_slot *slot;
	int stay; /* wait to be killed after the send returns */
};

/* Connects, says so, blocks in a send; publishes the outcome. */
static void blocked_client(void *p)
{
	struct cli_arg *a = p;
	messip_cnx_t *cnx = api_connect(a->id);
	messip_channel_t *ch;
	int32_t answer;
	int rc, err;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	errno = 0;
	rc = messip_send(ch, T_HOLD, a->id, (int)strlen(a->id) + 1, &answer,
			 NULL, 0, MESSIP_NOTIMEOUT);
	err = errno;
	if (a->slot)
		fault_slot_set(a->slot, rc, err);
	if (a->stay)
		api_sleep_ms(60000);
	CHILD_CHECK(rc == -1 && err == ESRCH);
	/* From then on, at once. */
	CHILD_CHECK(messip_channel_ping(ch, 1000) == -1 && errno == ESRCH);
}

/* Sends one echo and checks the answer. */
static void echo_client(void *p)
{
	const char *name = p;
	messip_cnx_t *cnx = api_connect("echo");
	messip_channel_t *ch;
	int32_t answer = 0;
	char buf[16] = "";

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, name, 5000);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_send(ch, T_ECHO, "still", 6, &answer, buf,
				sizeof(buf), 5000) == 0);
	CHILD_CHECK(answer == 6 && strcmp(buf, "still") == 0);
	CHILD_CHECK(messip_channel_disconnect(ch, 2000) == MESSIP_OK);
	messip_disconnect(cnx, 2000);
}

/* The server carries on: a new client's echo is answered. */
static void serve_echo_client(messip_channel_t *ch)
{
	pid_t pid = api_fork(echo_client, ch->name);
	int64_t end = api_now_ms() + 8000;
	int echoed = 0;

	while (!echoed && api_now_ms() < end) {
		int32_t type = 0;
		char buf[16];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 200);

		if (r >= 0 && type == T_ECHO) {
			CU_ASSERT_EQUAL(messip_reply(ch, r, ch->datalen, buf,
						     ch->datalenr, 2000),
					0);
			echoed = 1;
		} else if (r >= 0) {
			messip_reply(ch, r, 0, NULL, 0, 1000);
		}
	}
	CU_ASSERT(echoed);
	CU_ASSERT(api_child_ok(pid, 5000));
}

/* What a server saw in a window. */
struct seen {
	int msgs, dismissed, other;
	int replied_ok, replied_esrch, replied_other;
	char dismissed_ids[16][MESSIP_MAXLEN_ID + 1];
};

/* Receive for window_ms, replying at once to every message. */
static void collect(messip_channel_t *ch, int window_ms, struct seen *s)
{
	int64_t end = api_now_ms() + window_ms, left;

	while ((left = end - api_now_ms()) > 0) {
		int32_t type = 0;
		char buf[32];
		int r = messip_receive(ch, &type, buf, sizeof(buf), (int)left);

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		if (r >= 0) {
			int rr;

			s->msgs++;
			errno = 0;
			rr = messip_reply(ch, r, 0, NULL, 0, 1000);
			if (rr == 0)
				s->replied_ok++;
			else if (rr == -1 && errno == ESRCH)
				s->replied_esrch++;
			else
				s->replied_other++;
		} else if (r == MESSIP_MSG_DISMISSED) {
			if (s->dismissed < 16)
				snprintf(s->dismissed_ids[s->dismissed],
					 MESSIP_MAXLEN_ID + 1, "%s",
					 ch->remote_id);
			s->dismissed++;
		} else {
			s->other++;
		}
	}
}

static int count_id(const struct seen *s, const char *id)
{
	int n = 0;

	for (int i = 0; i < s->dismissed && i < 16; i++)
		n += strcmp(s->dismissed_ids[i], id) == 0;
	return n;
}

/* ---- a client dies while its request is unread -------------------------- */

static void test_client_killed_request_unread(void)
{
	messip_cnx_t *cnx = api_connect("srvq");
	struct api_gate ready;
	struct cli_arg ca = {"f-unread", "victim", &ready, NULL, 1};
	struct seen s = {0};
	messip_channel_t *ch;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "f-unread", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	pid = api_fork(blocked_client, &ca);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	api_sleep_ms(200); /* its HELLO and SEND wait in our socket */
	mp_test_kill(pid);
	api_sleep_ms(200); /* the manager has seen it go */
	collect(ch, 1000, &s);
	fprintf(stderr,
		"  unread request of a dead client: %d delivered, reply "
		"ok %d / ESRCH %d; DISMISSED %d\n",
		s.msgs, s.replied_ok, s.replied_esrch, s.dismissed);
	CU_ASSERT_EQUAL(s.dismissed, 1);
	CU_ASSERT_EQUAL(count_id(&s, "victim"), 1);
	CU_ASSERT(s.msgs <= 1);
	/* Delivered or not, a reply must not report success to the dead:
	 * it is -1/ESRCH (on shared memory the request waited in its slot
	 * longer than a millisecond, so the reply checks the client). */
	CU_ASSERT_EQUAL(s.replied_ok, 0);
	CU_ASSERT_EQUAL(s.replied_esrch, s.msgs);
	CU_ASSERT_EQUAL(s.replied_other, 0);
	CU_ASSERT_EQUAL(s.other, 0);
	serve_echo_client(ch);
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

/* ---- six clients die at once -------------------------------------------- */

#define N_VICTIMS 6

static void test_clients_killed_held_and_unread(void)
{
	messip_cnx_t *cnx = api_connect("srvmany");
	struct api_gate ready;
	struct cli_arg ca[N_VICTIMS];
	pid_t pid[N_VICTIMS];
	int held[N_VICTIMS / 2];
	struct seen s = {0};
	messip_channel_t *ch;
	int nheld = 0, esrch = 0;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "f-many", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	for (int i = 0; i < N_VICTIMS; i++) {
		ca[i].name = "f-many";
		snprintf(ca[i].id, sizeof(ca[i].id), "v%d", i);
		ca[i].ready = &ready;
		ca[i].slot = NULL;
		ca[i].stay = 1;
	}
	/* Three requests received and held ... */
	for (int i = 0; i < N_VICTIMS / 2; i++)
		pid[i] = api_fork(blocked_client, &ca[i]);
	while (nheld < N_VICTIMS / 2) {
		int32_t type = 0;
		char buf[16];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 5000);

		CU_ASSERT_FATAL(r >= 0);
		CU_ASSERT_EQUAL(type, T_HOLD);
		held[nheld++] = r;
	}
	for (int i = 0; i < N_VICTIMS / 2; i++)
		CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	/* ... three sent but not read. */
	for (int i = N_VICTIMS / 2; i < N_VICTIMS; i++)
		pid[i] = api_fork(blocked_client, &ca[i]);
	for (int i = N_VICTIMS / 2; i < N_VICTIMS; i++)
		CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	api_sleep_ms(200);
	for (int i = 0; i < N_VICTIMS; i++)
		kill(pid[i], SIGKILL);
	for (int i = 0; i < N_VICTIMS; i++)
		mp_test_kill(pid[i]); /* reaps */
	api_sleep_ms(200);
	for (int i = 0; i < nheld; i++) {
		errno = 0;
		if (messip_reply(ch, held[i], 0, "late", 4, 1000) == -1 &&
		    errno == ESRCH)
			esrch++;
	}
	CU_ASSERT_EQUAL(esrch, N_VICTIMS / 2);
	collect(ch, 1500, &s);
	fprintf(stderr,
		"  6 clients killed: held replies ESRCH %d/3; unread "
		"delivered %d (reply ok %d, ESRCH %d); DISMISSED %d\n",
		esrch, s.msgs, s.replied_ok, s.replied_esrch, s.dismissed);
	CU_ASSERT_EQUAL(s.dismissed, N_VICTIMS);
	for (int i = 0; i < N_VICTIMS; i++)
		CU_ASSERT_EQUAL(count_id(&s, ca[i].id), 1);
	CU_ASSERT(s.msgs <= N_VICTIMS / 2);
	CU_ASSERT_EQUAL(s.replied_ok, 0);
	CU_ASSERT_EQUAL(s.other, 0);
	serve_echo_client(ch);
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

/* ---- the server dies with clients blocked ------------------------------- */

struct holder_arg {
	const char *name;
	int hold;
	int32_t maxbuf;
	struct api_gate *ready;
};

/* Creates the channel, holds `hold` requests, then waits to be killed. */
static void holding_server(void *p)
{
	struct holder_arg *a = p;
	messip_cnx_t *cnx = api_connect("holder");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, a->maxbuf);
	CHILD_CHECK(ch);
	for (int i = 0; i < a->hold; i++) {
		int32_t type = 0;
		char buf[16];

		CHILD_CHECK(messip_receive(ch, &type, buf, sizeof(buf),
					   10000) >= 0);
	}
	api_gate_signal(a->ready);
	api_sleep_ms(60000);
}

static void test_server_killed_clients_blocked(void)
{
	struct api_gate ready, srv_ready;
	struct holder_arg ha = {"f-srvdie", N_VICTIMS / 2, 0, &srv_ready};
	struct fault_slot *slot = fault_slots(N_VICTIMS);
	struct cli_arg ca[N_VICTIMS];
	pid_t srv, pid[N_VICTIMS];
	int64_t t_kill, worst = 0;
	int done;

	api_gate_init(&ready);
	api_gate_init(&srv_ready);
	srv = api_fork(holding_server, &ha);
	for (int i = 0; i < N_VICTIMS; i++) {
		ca[i].name = "f-srvdie";
		snprintf(ca[i].id, sizeof(ca[i].id), "b%d", i);
		ca[i].ready = &ready;
		ca[i].slot = &slot[i];
		ca[i].stay = 0;
	}
	for (int i = 0; i < N_VICTIMS / 2; i++)
		pid[i] = api_fork(blocked_client, &ca[i]);
	CU_ASSERT_FATAL(api_gate_wait(&srv_ready, 10000)); /* 3 held */
	for (int i = N_VICTIMS / 2; i < N_VICTIMS; i++)
		pid[i] = api_fork(blocked_client, &ca[i]);
	for (int i = 0; i < N_VICTIMS; i++)
		CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	api_sleep_ms(200); /* the last three wait, not even accepted */
	t_kill = api_now_ms();
	mp_test_kill(srv);
	done = fault_slots_wait(slot, N_VICTIMS, 5000);
	CU_ASSERT_EQUAL(done, N_VICTIMS);
	for (int i = 0; i < N_VICTIMS; i++) {
		int64_t dt = slot[i].t_ms - t_kill;

		CU_ASSERT_EQUAL(slot[i].rc, -1);
		CU_ASSERT_EQUAL(slot[i].err, ESRCH);
		CU_ASSERT(slot[i].done && dt <= BOUND_MS);
		if (dt > worst)
			worst = dt;
	}
	fprintf(stderr,
		"  server killed: %d/%d clients ESRCH, slowest %lld ms\n", done,
		N_VICTIMS, (long long)worst);
	for (int i = 0; i < N_VICTIMS; i++)
		CU_ASSERT(api_child_ok(pid[i], 5000));
	fault_slots_free(slot, N_VICTIMS);
	api_gate_close(&ready);
	api_gate_close(&srv_ready);
}

/* ---- the server dies with its buffered queue full ----------------------- */

#define Q_CAP 8

struct parked_arg {
	struct api_gate *ready;
	struct fault_slot *slot;
};

/* Parks a buffered send on the full queue; publishes the outcome. */
static void parked_sender(void *p)
{
	struct parked_arg *a = p;
	messip_cnx_t *cnx = api_connect("parked");
	messip_channel_t *ch;
	int rc;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "f-bufdie", 5000);
	CHILD_CHECK(ch);
	/* Full for us too: over TCP the queue the parent filled; on the
	 * same host our own lane (its bound is per sender), which we fill
	 * first. */
	for (int i = 0; i <= Q_CAP; i++) {
		rc = messip_buffered_send(ch, 40, "fill", 4, 100);
		if (rc < 0)
			break;
	}
	CHILD_CHECK(rc == -1 && errno == ETIMEDOUT);
	api_gate_signal(a->ready);
	errno = 0;
	rc = messip_buffered_send(ch, 50, "parked", 6, 10000);
	fault_slot_set(a->slot, rc, errno);
	CHILD_CHECK(rc == -1 && errno == ESRCH);
}

/* The name's next owner: must start empty. */
static void second_server(void *p)
{
	struct api_gate *ready = p;
	messip_cnx_t *cnx = api_connect("second");
	messip_channel_t *ch;
	int before = 0, last = 0;
	int64_t end;

	CHILD_CHECK(cnx);
	/* The old owner's name is free by the time its senders saw
	 * ESRCH: no retry. */
	ch = messip_channel_create(cnx, "f-bufdie", 2000, Q_CAP);
	CHILD_CHECK(ch);
	api_gate_signal(ready);
	end = api_now_ms() + 8000;
	while (!last && api_now_ms() < end) {
		int32_t type = -1;
		char buf[16];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 200);

		if (r == MESSIP_MSG_TIMEOUT)
			continue;
		if (r == MESSIP_MSG_NOREPLY && type == T_LAST) {
			last = 1;
			continue;
		}
		/* Anything else (an old message, an event about a client
		 * that never connected to us) comes from the old channel. */
		fprintf(stderr,
			"second server: unexpected %d type %d from %s\n", r,
			(int)type, ch->remote_id);
		before++;
	}
	CHILD_CHECK(last);
	CHILD_CHECK(before == 0);
	messip_disconnect(cnx, 2000);
}

static void test_server_killed_buffered_queued(void)
{
	struct api_gate srv_ready, ready;
	struct holder_arg ha = {"f-bufdie", 0, Q_CAP, &srv_ready};
	struct fault_slot *slot = fault_slots(1);
	struct parked_arg pa = {&ready, slot};
	messip_cnx_t *cnx = api_connect("bsender");
	messip_channel_t *ch;
	pid_t srv, parked, second;
	int32_t answer;
	int64_t t_kill, dt = -1;
	int rc = 0;

	CU_ASSERT_FATAL(cnx != NULL);
	api_gate_init(&srv_ready);
	api_gate_init(&ready);
	srv = api_fork(holding_server, &ha);
	CU_ASSERT_FATAL(api_gate_wait(&srv_ready, 10000));
	ch = messip_channel_connect(cnx, "f-bufdie", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	for (int i = 0; i < Q_CAP; i++)
		CU_ASSERT_EQUAL(messip_buffered_send(ch, i, "q", 1, 2000), i);
	/* Full: a sender waits for room. */
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 9, "f", 1, 100), -1);
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	parked = api_fork(parked_sender, &pa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	api_sleep_ms(300); /* parked at the manager */
	t_kill = api_now_ms();
	mp_test_kill(srv);
	/* The parked sender is told at once, not at its deadline. */
	CU_ASSERT_EQUAL(fault_slots_wait(slot, 1, 5000), 1);
	CU_ASSERT_EQUAL(slot[0].rc, -1);
	CU_ASSERT_EQUAL(slot[0].err, ESRCH);
	CU_ASSERT(slot[0].t_ms - t_kill <= BOUND_MS);
	fprintf(stderr,
		"  parked buffered sender: rc %d errno %d after %lld ms\n",
		slot[0].rc, slot[0].err, (long long)(slot[0].t_ms - t_kill));
	CU_ASSERT(api_child_ok(parked, 5000));
	/* A later buffered send: ESRCH. */
	while (api_now_ms() - t_kill < 3000) {
		rc = messip_buffered_send(ch, 10, "x", 1, 500);
		if (rc < 0) {
			dt = api_now_ms() - t_kill;
			break;
		}
		api_sleep_ms(20);
	}
	CU_ASSERT_EQUAL(rc, -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT(dt >= 0 && dt <= BOUND_MS);
	CU_ASSERT_EQUAL(messip_send(ch, T_ECHO, "x", 1, &answer, NULL, 0, 1000),
			-1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	/* The name is free: a new server takes it, and starts empty. */
	second = api_fork(second_server, &srv_ready);
	CU_ASSERT_FATAL(api_gate_wait(&srv_ready, 5000));
	/* The old handle does not reach the new channel. */
	errno = 0;
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 11, "old", 3, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	/* Connecting again by name finds the new one. */
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	ch = messip_channel_connect(cnx, "f-bufdie", 2000);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(messip_buffered_send(ch, T_LAST, "new", 3, 2000), 0);
	CU_ASSERT(api_child_ok(second, 10000));
	fault_slots_free(slot, 1);
	api_gate_close(&srv_ready);
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

FAULT_BOTH_PATHS(test_client_killed_request_unread)
FAULT_BOTH_PATHS(test_clients_killed_held_and_unread)
FAULT_BOTH_PATHS(test_server_killed_clients_blocked)
FAULT_BOTH_PATHS(test_server_killed_buffered_queued)

static const struct mp_test_case tests[] = {
	{"client killed while its request is unread (shared memory): "
	 "DISMISSED once, its reply ESRCH",
	 test_client_killed_request_unread_shm},
	{"client killed while its request is unread (TCP): DISMISSED once, "
	 "no reply succeeds",
	 test_client_killed_request_unread_tcp},
	{"six clients killed at once, requests held and unread (shared "
	 "memory): DISMISSED once each, replies ESRCH, server carries on",
	 test_clients_killed_held_and_unread_shm},
	{"six clients killed at once, requests held and unread (TCP): "
	 "DISMISSED once each, replies ESRCH, server carries on",
	 test_clients_killed_held_and_unread_tcp},
	{"server killed with six clients blocked (shared memory): each ESRCH "
	 "within 1 s",
	 test_server_killed_clients_blocked_shm},
	{"server killed with six clients blocked (TCP): each ESRCH within 1 s",
	 test_server_killed_clients_blocked_tcp},
	{"server killed with buffered queue full (shared memory): parked and "
	 "later senders ESRCH, name freed, new owner starts empty",
	 test_server_killed_buffered_queued_shm},
	{"server killed with buffered queue full (TCP): parked and later "
	 "senders ESRCH, name freed, new owner starts empty",
	 test_server_killed_buffered_queued_tcp},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_fault_death", 60);
	api_verbose();
	api_start_mgr(2, NULL);
	rc = mp_test_main("fault_death", tests);
	api_stop_mgr();
	return rc;
}
