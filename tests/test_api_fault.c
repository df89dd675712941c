/*
 * test_api_fault — timeouts and deaths, with real processes: receive
 * timeout, a send that times out (its late reply discarded, a withdrawn
 * request never delivered), server dies while a client is blocked, reply
 * to a dead client, DISMISSED exactly once, DISCONNECT once,
 * DEATH_PROCESS, a server that leaves while a client waits.
 */
#include "config.h"

#include <poll.h>
#include <sys/socket.h>

#include "mp_rawauth.h"
#include "mp_wire.h"
#include "test_api_util.h"

/* Collect what receive returns for window_ms: counts per outcome. */
struct tally {
	int disconnect, dismissed, death, messages, other;
	char last_id[MESSIP_MAXLEN_ID + 1];
};

static void drain(messip_channel_t *ch, int window_ms, struct tally *t)
{
	int64_t end = api_now_ms() + window_ms;
	int64_t left;

	while ((left = end - api_now_ms()) > 0) {
		char buf[64];
		int32_t type;
		int r = messip_receive(ch, &type, buf, sizeof(buf), (int)left);

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		if (r == MESSIP_MSG_DISCONNECT)
			t->disconnect++;
		else if (r == MESSIP_MSG_DISMISSED)
			t->dismissed++;
		else if (r == MESSIP_MSG_DEATH_PROCESS)
			t->death++;
		else if (r >= 0 || r == MESSIP_MSG_NOREPLY)
			t->messages++;
		else
			t->other++;
		if (r != MESSIP_MSG_TIMEOUT)
			snprintf(t->last_id, sizeof(t->last_id), "%s",
				 ch->remote_id);
		if (r >= 0)
			messip_reply(ch, r, 0, NULL, 0, 1000);
	}
}

/* Receive until an outcome other than what is ignorable arrives. */
static int receive_one(messip_channel_t *ch, int32_t *type, void *buf,
		       int maxlen, int timeout_ms)
{
	return messip_receive(ch, type, buf, maxlen, timeout_ms);
}

static void test_receive_timeout(void)
{
	messip_cnx_t *cnx = api_connect("rtmo");
	messip_channel_t *ch;
	int32_t type;
	int64_t t0, dt;
	char buf[8];

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-rtmo", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	t0 = api_now_ms();
	errno = 0;
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, sizeof(buf), 200),
			MESSIP_MSG_TIMEOUT);
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT(dt >= 190 && dt < 1000);
	t0 = api_now_ms();
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, sizeof(buf), 0),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT(api_now_ms() - t0 < 100);
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, -1, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_receive(ch, &type, NULL, 10, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_receive(NULL, &type, buf, 8, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	messip_disconnect(cnx, 2000);
}

/* ---- late replies and withdrawn requests --------------------------------- */

static void slow_server(void *arg)
{
	messip_cnx_t *cnx = api_connect("slow");
	messip_channel_t *ch;
	int32_t type;
	char buf[16];
	int idx;

	(void)arg;
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "t-late", 5000, 0);
	CHILD_CHECK(ch);
	/* 1: answered too late (the client gave up after 150 ms). */
	idx = receive_one(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(idx >= 0 && type == 1);
	api_sleep_ms(400);
	CHILD_CHECK(messip_reply(ch, idx, 111, "late", 4, 2000) == 0);
	/* 2: answered in time; then look away for 500 ms. */
	idx = receive_one(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(idx >= 0 && type == 2);
	CHILD_CHECK(messip_reply(ch, idx, 222, "ok", 2, 2000) == 0);
	api_sleep_ms(500);
	/* 3 was withdrawn while we looked away: the next one is 4. */
	idx = receive_one(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(idx >= 0);
	CHILD_CHECK(type == 4);
	CHILD_CHECK(messip_reply(ch, idx, 444, NULL, 0, 2000) == 0);
	idx = receive_one(ch, &type, buf, sizeof(buf), 10000);
	CHILD_CHECK(idx == MESSIP_MSG_DISCONNECT);
	messip_disconnect(cnx, 2000);
}

static void test_send_timeout_late_reply(void)
{
	messip_cnx_t *cnx = api_connect("late");
	messip_channel_t *ch;
	int32_t answer = 0;
	char buf[16];
	int64_t t0, dt;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	pid = api_fork(slow_server, NULL);
	ch = messip_channel_locate(cnx, "t-late", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	t0 = api_now_ms();
	errno = 0;
	CU_ASSERT_EQUAL(
		messip_send(ch, 1, "a", 1, &answer, buf, sizeof(buf), 150),
		MESSIP_MSG_TIMEOUT);
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT(dt >= 140 && dt < 1000);
	/* The late "111" must not be taken for this one's answer. */
	memset(buf, 0, sizeof(buf));
	CU_ASSERT_EQUAL(
		messip_send(ch, 2, "b", 1, &answer, buf, sizeof(buf), 3000), 0);
	CU_ASSERT_EQUAL(answer, 222);
	CU_ASSERT_EQUAL(ch->datalen, 2);
	CU_ASSERT(memcmp(buf, "ok", 2) == 0);
	/* Withdrawn before the server looked: never delivered. */
	CU_ASSERT_EQUAL(messip_send(ch, 3, "c", 1, &answer, NULL, 0, 150),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(messip_send(ch, 4, "d", 1, &answer, NULL, 0, 3000), 0);
	CU_ASSERT_EQUAL(answer, 444);
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 2000), 0);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
}

/* ---- the server dies ----------------------------------------------------- */

static void dying_server(void *arg)
{
	messip_cnx_t *cnx = api_connect("dying");
	messip_channel_t *ch;
	int32_t type;
	char buf[16];

	(void)arg;
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "t-dying", 5000, 0);
	CHILD_CHECK(ch);
	CHILD_CHECK(receive_one(ch, &type, buf, sizeof(buf), 10000) >= 0);
	api_sleep_ms(100);
	_exit(0); /* holding the request, no reply, no goodbye */
}

static void test_server_dies_client_blocked(void)
{
	messip_cnx_t *cnx = api_connect("orphan");
	messip_channel_t *ch;
	int32_t answer;
	int64_t t0, dt;
	pid_t pid;
	int rc = 0;

	CU_ASSERT_FATAL(cnx != NULL);
	pid = api_fork(dying_server, NULL);
	ch = messip_channel_locate(cnx, "t-dying", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	t0 = api_now_ms();
	errno = 0;
	CU_ASSERT_EQUAL(
		messip_send(ch, 1, "x", 1, &answer, NULL, 0, MESSIP_NOTIMEOUT),
		-1);
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT(dt < 2000);
	CU_ASSERT(api_child_ok(pid, 5000));
	/* And from then on, at once. */
	CU_ASSERT_EQUAL(messip_send(ch, 1, "x", 1, &answer, NULL, 0, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	/* The manager removes its channel: buffered sends fail too. */
	for (int i = 0; i < 40; i++) {
		rc = messip_buffered_send(ch, 1, "x", 1, 1000);
		if (rc < 0)
			break;
		api_sleep_ms(50);
	}
	CU_ASSERT_EQUAL(rc, -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	/* The name is free: a new server may take it. */
	CU_ASSERT_PTR_NULL(messip_channel_connect(cnx, "t-dying", 1000));
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 1000), MESSIP_OK);
	messip_disconnect(cnx, 2000);
}

/* A server that leaves cleanly while a client waits on it. */
static void leaving_server(void *arg)
{
	messip_cnx_t *cnx = api_connect("leaving");
	messip_channel_t *ch;
	int32_t type;
	char buf[16];

	(void)arg;
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "t-leaving", 5000, 0);
	CHILD_CHECK(ch);
	CHILD_CHECK(receive_one(ch, &type, buf, sizeof(buf), 10000) >= 0);
	CHILD_CHECK(messip_disconnect(cnx, 2000) == 0);
	api_sleep_ms(1000); /* stays alive: only the disconnect tells */
}

static void test_server_disconnects_client_blocked(void)
{
	messip_cnx_t *cnx = api_connect("waiter");
	messip_channel_t *ch;
	int32_t answer;
	int64_t t0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	pid = api_fork(leaving_server, NULL);
	ch = messip_channel_locate(cnx, "t-leaving", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	t0 = api_now_ms();
	CU_ASSERT_EQUAL(messip_send(ch, 1, "x", 1, &answer, NULL, 0, 5000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT(api_now_ms() - t0 < 900);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
}

/* ---- clients die ----------------------------------------------------------
 */

struct victim_arg {
	const char *name;
	struct api_gate *ready;
	int send;	/* block in a send after connecting */
	int twice;	/* connect twice (one handle, counted) */
	int disconnect; /* disconnect from the channel, then _exit */
};

static void victim(void *p)
{
	struct victim_arg *a = p;
	messip_cnx_t *cnx = api_connect("victim");
	messip_channel_t *ch;
	int32_t answer;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	if (a->twice)
		CHILD_CHECK(messip_channel_connect(cnx, a->name, 5000) == ch);
	if (a->disconnect) {
		CHILD_CHECK(messip_channel_disconnect(ch, 5000) == MESSIP_OK);
		if (a->twice)
			CHILD_CHECK(messip_channel_disconnect(ch, 5000) ==
				    MESSIP_OK);
		api_gate_signal(a->ready);
		_exit(0); /* no messip_disconnect: an unclean end */
	}
	api_gate_signal(a->ready);
	if (a->send)
		messip_send(ch, 7, "help", 4, &answer, NULL, 0, 30000);
	api_sleep_ms(30000); /* until killed */
}

static void test_reply_to_dead_client(void)
{
	messip_cnx_t *cnx = api_connect("carer");
	struct api_gate ready;
	struct victim_arg va = {"t-carer", &ready, 1, 0, 0};
	struct tally t = {0};
	messip_channel_t *ch;
	int32_t type = 0;
	char buf[16];
	int idx, r;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-carer", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	pid = api_fork(victim, &va);
	idx = receive_one(ch, &type, buf, sizeof(buf), 5000);
	CU_ASSERT_FATAL(idx >= 0);
	CU_ASSERT_EQUAL(type, 7);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "victim");
	mp_test_kill(pid);
	r = receive_one(ch, &type, buf, sizeof(buf), 5000);
	CU_ASSERT_EQUAL(r, MESSIP_MSG_DISMISSED);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "victim");
	errno = 0;
	CU_ASSERT_EQUAL(messip_reply(ch, idx, 1, "late", 4, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	/* The index is free again, and the server carries on. */
	CU_ASSERT_EQUAL(messip_reply(ch, idx, 1, NULL, 0, 1000), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	va.send = 0;
	va.disconnect = 1;
	pid = api_fork(victim, &va);
	CU_ASSERT(api_gate_wait(&ready, 5000)); /* the first one's signal */
	CU_ASSERT(api_gate_wait(&ready, 5000));
	CU_ASSERT(api_child_ok(pid, 5000));
	drain(ch, 700, &t);
	CU_ASSERT_EQUAL(t.disconnect, 1);
	CU_ASSERT_EQUAL(t.dismissed, 0);
	CU_ASSERT_EQUAL(t.other, 0);
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

static void test_dismissed_once(void)
{
	messip_cnx_t *cnx = api_connect("watcher");
	struct api_gate ready;
	struct victim_arg va = {"t-watch", &ready, 0, 1, 0};
	struct tally t = {0};
	messip_channel_t *ch;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-watch", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	pid = api_fork(victim, &va);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	drain(ch, 100, &t); /* its HELLO, nothing reported */
	CU_ASSERT_EQUAL(t.dismissed + t.disconnect + t.messages, 0);
	mp_test_kill(pid);
	drain(ch, 1500, &t);
	CU_ASSERT_EQUAL(t.dismissed, 1);
	CU_ASSERT_EQUAL(t.disconnect, 0);
	CU_ASSERT_STRING_EQUAL(t.last_id, "victim");
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

static void test_disconnect_once(void)
{
	messip_cnx_t *cnx = api_connect("host");
	struct api_gate ready;
	struct victim_arg va = {"t-disc", &ready, 0, 1, 1};
	struct tally t = {0};
	messip_channel_t *ch;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-disc", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	pid = api_fork(victim, &va);
	CU_ASSERT(api_child_ok(pid, 5000));
	drain(ch, 1000, &t);
	CU_ASSERT_EQUAL(t.disconnect, 1);
	CU_ASSERT_EQUAL(t.dismissed, 0); /* it ended, but was disconnected */
	CU_ASSERT_STRING_EQUAL(t.last_id, "victim");
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

/* A process that registers, says so, and waits to be killed or exits. */
static void bystander(void *p)
{
	struct api_gate *ready = p;
	messip_cnx_t *cnx = api_connect("bystand");

	CHILD_CHECK(cnx);
	api_gate_signal(ready);
	api_sleep_ms(30000);
}

static void polite(void *p)
{
	struct api_gate *ready = p;
	messip_cnx_t *cnx = api_connect("polite");

	CHILD_CHECK(cnx);
	CHILD_CHECK(messip_disconnect(cnx, 2000) == 0);
	api_gate_signal(ready);
}

static void test_death_process(void)
{
	messip_cnx_t *cnx = api_connect("undertkr");
	struct api_gate ready;
	struct tally t = {0};
	messip_channel_t *ch;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-death", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	CU_ASSERT_EQUAL(messip_death_notify(cnx, 2000, 1), 0);
	CU_ASSERT_EQUAL(messip_death_notify(NULL, 2000, 1), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);

	/* A clean end is no death. */
	pid = api_fork(polite, &ready);
	CU_ASSERT(api_gate_wait(&ready, 5000));
	CU_ASSERT(api_child_ok(pid, 5000));
	drain(ch, 500, &t);
	CU_ASSERT_EQUAL(t.death, 0);

	pid = api_fork(bystander, &ready);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	mp_test_kill(pid);
	drain(ch, 1500, &t);
	CU_ASSERT_EQUAL(t.death, 1);
	CU_ASSERT_STRING_EQUAL(t.last_id, "bystand");
	CU_ASSERT_EQUAL(t.dismissed + t.disconnect + t.other, 0);

	/* Switched off: nothing. */
	CU_ASSERT_EQUAL(messip_death_notify(cnx, 2000, 0), 0);
	memset(&t, 0, sizeof(t));
	pid = api_fork(bystander, &ready);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	mp_test_kill(pid);
	drain(ch, 800, &t);
	CU_ASSERT_EQUAL(t.death, 0);
	api_gate_close(&ready);
	messip_disconnect(cnx, 2000);
}

/* ---- peers that break the protocol -------------------------------------- */

static int raw_send(int fd, const struct mp_wire_msg *m)
{
	uint8_t buf[256];
	int n = mp_wire_encode(m, buf, sizeof(buf));

	return n > 0 && write(fd, buf, (size_t)n) == n ? 0 : -1;
}

/* Next frame from fd; bytes after it stay in raw_buf for the next call
 * (one raw connection at a time). */
static uint8_t raw_buf[4096];
static size_t raw_have;

static int raw_recv(int fd, struct mp_wire_msg *m, int timeout_ms)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = mp_wire_decode(raw_buf, raw_have, 65536, m);
		ssize_t r;

		if (n > 0) {
			/* m's strings are copies; no data is used after. */
			memmove(raw_buf, raw_buf + n, raw_have - (size_t)n);
			raw_have -= (size_t)n;
			return n;
		}
		if (n < 0)
			return n;
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		r = read(fd, raw_buf + raw_have, sizeof(raw_buf) - raw_have);
		if (r <= 0)
			return -EPIPE;
		raw_have += (size_t)r;
	}
}

/* Let the server (this program) run while a raw peer waits for it. */
static void pump_server(void *arg)
{
	uint8_t buf[64];
	int32_t type;

	messip_receive(arg, &type, buf, sizeof(buf), 10);
}

/* A raw connection to the server that proved the ticket: its fd. */
static int proven_peer(messip_channel_t *ch, int port, const uint8_t *ticket)
{
	int fd = mp_tcp_connect_local(port);

	CU_ASSERT(fd >= 0);
	CU_ASSERT(rawauth_prove(fd, ticket, NULL, NULL, pump_server, ch) ==
		  0);
	raw_have = 0;
	return fd;
}

/* Let the server run, then: did it close the raw peer? */
static int closed_by_server(messip_channel_t *ch, int fd)
{
	uint8_t buf[4096];
	int32_t type;

	for (int i = 0; i < 10; i++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = messip_receive(ch, &type, buf, sizeof(buf), 50);

		CU_ASSERT_EQUAL(r, MESSIP_MSG_TIMEOUT);
		if (r != MESSIP_MSG_TIMEOUT)
			fprintf(stderr, "receive: %d (%s)\n", r,
				strerror(errno));
		while (poll(&p, 1, 0) > 0) {
			ssize_t n = read(fd, buf, sizeof(buf));

			if (n <= 0)
				return 1; /* EOF or reset */
		}
	}
	return 0;
}

static void test_garbage_peers(void)
{
	messip_cnx_t *cnx = api_connect("sturdy");
	static uint8_t junk[100000];
	struct mp_wire_msg m;
	messip_channel_t *ch;
	uint8_t buf[512], ticket[MP_AUTH_NONCE];
	int port, fd, idx;
	int32_t type;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-garbage", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	port = rawauth_locate(api_mgr.port, "t-garbage", ticket);
	CU_ASSERT_FATAL(port > 0);
	/* That raw registration connected and ended without a goodbye. */
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, sizeof(buf), 2000),
			MESSIP_MSG_DISMISSED);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "raw");

	/* A bad version byte. */
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(write(fd, "\x07\x01\0\0\0\0\0\0\0\0\0\0", 12) == 12);
	CU_ASSERT(closed_by_server(ch, fd));
	close(fd);
	/* A request before HELLO. */
	fd = mp_tcp_connect_local(port);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_SEND;
	m.data = "x";
	m.datalen = 1;
	CU_ASSERT(raw_send(fd, &m) == 0);
	CU_ASSERT(closed_by_server(ch, fd));
	close(fd);
	/* HELLO for another channel: ENOENT, then closed. */
	fd = proven_peer(ch, port, ticket);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	m.reqid = 9;
	strcpy(m.name, "t-other");
	CU_ASSERT(raw_send(fd, &m) == 0);
	messip_receive(ch, &type, buf, sizeof(buf), 50);
	raw_have = 0;
	CU_ASSERT(raw_recv(fd, &m, 1000) > 0);
	CU_ASSERT(m.op == MP_OP_WELCOME && m.a == ENOENT && m.reqid == 9);
	CU_ASSERT(closed_by_server(ch, fd));
	close(fd);
	/* A frame announcing more than any message may hold. */
	fd = proven_peer(ch, port, ticket);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	strcpy(m.name, "t-garbage");
	CU_ASSERT(raw_send(fd, &m) == 0);
	CU_ASSERT(write(fd, "\x01\x11\0\0\0\0\0\x01\x7f\xff\xff\xff", 12) ==
		  12);
	CU_ASSERT(closed_by_server(ch, fd));
	close(fd);
	/* A well-behaved raw peer: proof, HELLO, SEND, PING, stray CANCEL. */
	fd = proven_peer(ch, port, ticket);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	m.reqid = 1;
	strcpy(m.name, "t-garbage");
	strcpy(m.id, "raw");
	CU_ASSERT(raw_send(fd, &m) == 0);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_CANCEL;
	m.reqid = 777;
	CU_ASSERT(raw_send(fd, &m) == 0);
	m.op = MP_OP_SEND;
	m.reqid = 5;
	m.a = 31;
	m.data = "hi";
	m.datalen = 2;
	CU_ASSERT(raw_send(fd, &m) == 0);
	idx = messip_receive(ch, &type, buf, sizeof(buf), 2000);
	CU_ASSERT(idx >= 0);
	CU_ASSERT_EQUAL(type, 31);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "raw");
	CU_ASSERT_EQUAL(messip_reply(ch, idx, 32, "yo", 2, 1000), 0);
	CU_ASSERT(raw_recv(fd, &m, 1000) > 0);
	CU_ASSERT(m.op == MP_OP_WELCOME && m.a == 0);
	CU_ASSERT(raw_recv(fd, &m, 1000) > 0);
	CU_ASSERT(m.op == MP_OP_REPLY && m.reqid == 5 && m.a == 32 &&
		  m.datalen == 2);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_PING;
	m.reqid = 6;
	CU_ASSERT(raw_send(fd, &m) == 0);
	messip_receive(ch, &type, buf, sizeof(buf), 50);
	CU_ASSERT(raw_recv(fd, &m, 1000) > 0);
	CU_ASSERT(m.op == MP_OP_PONG && m.reqid == 6);
	close(fd);
	/* Lots of random bytes after a proper HELLO. */
	fd = proven_peer(ch, port, ticket);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	strcpy(m.name, "t-garbage");
	CU_ASSERT(raw_send(fd, &m) == 0);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)mp_test_rand();
	junk[0] = 1; /* version right, the rest is noise */
	CU_ASSERT(write(fd, junk, sizeof(junk)) > 0);
	CU_ASSERT(closed_by_server(ch, fd));
	close(fd);
	/* And the server still serves a real client. */
	{
		struct api_gate ready;
		struct victim_arg va = {"t-garbage", &ready, 1, 0, 0};
		pid_t pid;

		api_gate_init(&ready);
		pid = api_fork(victim, &va);
		idx = messip_receive(ch, &type, buf, sizeof(buf), 5000);
		CU_ASSERT(idx >= 0);
		CU_ASSERT_EQUAL(type, 7);
		if (idx >= 0)
			CU_ASSERT_EQUAL(messip_reply(ch, idx, 0, NULL, 0, 1000),
					0);
		mp_test_kill(pid);
		api_gate_close(&ready);
	}
	messip_disconnect(cnx, 2000);
}

static const struct mp_test_case tests[] = {
	{"receive times out", test_receive_timeout},
	{"send times out: late reply discarded, withdrawn never delivered",
	 test_send_timeout_late_reply},
	{"server dies while client blocked", test_server_dies_client_blocked},
	{"server disconnects while client blocked",
	 test_server_disconnects_client_blocked},
	{"reply to a dead client: ESRCH, server carries on",
	 test_reply_to_dead_client},
	{"client killed: DISMISSED exactly once", test_dismissed_once},
	{"client disconnects: DISCONNECT once, no DISMISSED",
	 test_disconnect_once},
	{"death notification", test_death_process},
	{"peers breaking the protocol are dropped, the server carries on",
	 test_garbage_peers},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_fault", 90);
	api_verbose();
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_fault", tests);
	api_stop_mgr();
	return rc;
}
