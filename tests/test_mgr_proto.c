/*
 * test_mgr_proto — the manager's protocol, end to end: a real messip-mgr
 * (2 workers unless said otherwise) on a free loopback port, driven by
 * raw protocol clients (test_mgr_cli).  Every operation's round trip, the
 * name rules (EEXIST, ENOENT, LOCATE), buffered messages (order, full
 * ring, parked senders, no stall when a parked sender and the server share
 * the worker), events (DISCONNECT, DISMISSED exactly once, DEATH_PROCESS,
 * growing sequence numbers), how a connection ending without BYE ends or
 * holds its registration (end of stream, reset, same host or not, pid
 * alive or not), bad input closing only the offending connection, and
 * 1,000 concurrent connections.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp_host.h"
#include "mp_mgrproc.h"
#include "mp_test.h"
#include "mp_time.h"
#include "test_mgr_cli.h"

#define EV_DISCONNECT    (-2)
#define EV_DISMISSED     (-3)
#define EV_DEATH_PROCESS (-7)

static struct mp_mgrproc mgr;
static uint64_t ev_last[64];

static void start(int workers, const char *extra)
{
	int rc = mp_mgrproc_start(&mgr, workers, extra);

	memset(ev_last, 0, sizeof(ev_last));
	CU_ASSERT_FATAL(rc == 0);
}

static void stop(void)
{
	int status = mp_mgrproc_stop(&mgr);

	CU_ASSERT(status == 0);
}

static int64_t ms_since(int64_t t0)
{
	return (mp_time_now_ns() - t0) / 1000000;
}

/* Expect an EVENT of kind ev about registration regno on channel handle;
 * its sequence number grows per channel (the last one seen is kept per
 * handle in ev_last). */
static void expect_event(struct tcli *srv, int32_t handle, int32_t ev,
			 int32_t regno, const char *id)
{
	struct tcli_msg *t = NULL;
	int rc = tcli_recv_op(srv, MP_OP_EVENT, &t, 3000);

	CU_ASSERT_FATAL(rc == 0);
	CU_ASSERT(t->m.a == ev);
	CU_ASSERT(t->m.b == handle);
	CU_ASSERT(t->m.c == regno);
	if (handle >= 0 && handle < 64) {
		CU_ASSERT(t->m.u > ev_last[handle]);
		ev_last[handle] = t->m.u;
	}
	if (id)
		CU_ASSERT_STRING_EQUAL(t->m.id, id);
	tcli_msg_free(t);
}

/* No EVENT arrives within ms. */
static void expect_no_event(struct tcli *srv, int ms)
{
	struct tcli_msg *t = NULL;
	int rc = tcli_recv_op(srv, MP_OP_EVENT, &t, ms);

	CU_ASSERT(rc == -ETIMEDOUT);
	if (rc == 0) {
		fprintf(stderr, "unexpected EVENT a=%d c=%d\n", t->m.a,
			t->m.c);
		tcli_msg_free(t);
	}
}

/* ---- registration ------------------------------------------------------ */

static void test_hello_welcome_ping(void)
{
	struct mp_wire_msg m = { .op = MP_OP_HELLO };
	struct tcli a, b;
	struct tcli_msg *t;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_open(&a, mgr.port) == 0);
	snprintf(m.id, sizeof(m.id), "alpha");
	m.a = 1234;
	CU_ASSERT_FATAL(tcli_call(&a, &m, &t, 3000) == 0);
	CU_ASSERT(t->m.op == MP_OP_WELCOME);
	CU_ASSERT(t->m.a == 0);
	CU_ASSERT(t->m.b > 0);
	CU_ASSERT(t->m.u != 0);
	CU_ASSERT(t->m.reqid == m.reqid);
	CU_ASSERT(strlen(t->m.addr) > 0); /* host token */
	a.regno = t->m.b;
	a.token = t->m.u;
	tcli_msg_free(t);
	CU_ASSERT(tcli_ping(&a) == 0);

	CU_ASSERT_FATAL(tcli_hello(&b, mgr.port, "beta", 0) == 0);
	CU_ASSERT(b.regno != a.regno);
	CU_ASSERT(b.token != a.token);
	/* An unknown token: ESTALE, and the same connection may then
	 * register afresh. */
	tcli_close(&b);
	CU_ASSERT(tcli_hello(&b, mgr.port, "beta", 0x1234567) == ESTALE);
	CU_ASSERT(tcli_hello(&b, 0, "beta", 0) == 0);
	CU_ASSERT(tcli_ping(&b) == 0);
	/* A live token is not handed over (ESTALE after a short wait). */
	{
		struct tcli c;

		CU_ASSERT(tcli_hello(&c, mgr.port, "gamma", a.token) ==
			  ESTALE);
		tcli_close(&c);
	}
	CU_ASSERT(tcli_ping(&a) == 0);
	CU_ASSERT(tcli_bye(&a) == 0);
	CU_ASSERT(tcli_wait_closed(&a, 2000) == 0);
	tcli_close(&a);
	tcli_close(&b);
	stop();
}

/* ---- channels ---------------------------------------------------------- */

static void test_create_connect_delete(void)
{
	struct tcli srv, cli, other;
	struct mp_wire_msg m = { .op = MP_OP_CH_CONNECT };
	struct tcli_msg *t;
	int32_t h, h2, n;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_hello(&other, mgr.port, "other", 0) == 0);

	CU_ASSERT(tcli_create(&srv, "chan-a", 0, &h) == 0);
	CU_ASSERT(h >= 0);
	CU_ASSERT(tcli_create(&other, "chan-a", 0, NULL) == EEXIST);
	CU_ASSERT(tcli_create(&srv, "chan-a", 0, NULL) == EEXIST);
	CU_ASSERT(tcli_create(&srv, "", 0, NULL) == EINVAL);
	CU_ASSERT(tcli_create(&srv, "neg", -1, NULL) == EINVAL);

	/* CH_INFO carries what a client needs to reach the server. */
	snprintf(m.name, sizeof(m.name), "chan-a");
	CU_ASSERT_FATAL(tcli_call(&cli, &m, &t, 3000) == 0);
	CU_ASSERT(t->m.op == MP_OP_CH_INFO);
	CU_ASSERT(t->m.a == 0);
	CU_ASSERT(t->m.b == h);
	CU_ASSERT(t->m.c == srv.regno);
	CU_ASSERT(t->m.u == 42);
	CU_ASSERT_STRING_EQUAL(t->m.name, "chan-a");
	CU_ASSERT_STRING_EQUAL(t->m.id, "srv");
	CU_ASSERT_STRING_EQUAL(t->m.addr, "127.0.0.1:1");
	tcli_msg_free(t);
	/* Connecting twice counts once. */
	CU_ASSERT(tcli_connect(&cli, "chan-a", -2, &h2, 3000) == 0);
	CU_ASSERT(h2 == h);
	CU_ASSERT(tcli_connect(&cli, "nope", -2, NULL, 3000) == ENOENT);

	CU_ASSERT(tcli_delete(&other, "chan-a", NULL) == EPERM);
	CU_ASSERT(tcli_delete(&srv, "chan-a", &n) == 0);
	CU_ASSERT(n == 1); /* not deleted: a client is connected */
	CU_ASSERT(tcli_connect(&other, "chan-a", -2, NULL, 3000) == 0);
	CU_ASSERT(tcli_delete(&srv, "chan-a", &n) == 0);
	CU_ASSERT(n == 2);

	/* Disconnect: the server hears it exactly once, with the id. */
	CU_ASSERT(tcli_disconnect(&cli, h) == 0);
	expect_event(&srv, h, EV_DISCONNECT, cli.regno, "cli");
	CU_ASSERT(tcli_disconnect(&cli, h) == EACCES);
	CU_ASSERT(tcli_disconnect(&other, h) == 0);
	expect_event(&srv, h, EV_DISCONNECT, other.regno, "other");
	expect_no_event(&srv, 200);

	CU_ASSERT(tcli_delete(&srv, "chan-a", &n) == 0);
	CU_ASSERT(n == 0);
	CU_ASSERT(tcli_delete(&srv, "chan-a", &n) == ENOENT);
	CU_ASSERT(tcli_connect(&cli, "chan-a", -2, NULL, 3000) == ENOENT);
	/* The name is free again. */
	CU_ASSERT(tcli_create(&other, "chan-a", 0, NULL) == 0);

	tcli_close(&srv);
	tcli_close(&cli);
	tcli_close(&other);
	stop();
}

static void test_locate(void)
{
	struct mp_wire_msg m = { .op = MP_OP_CH_CONNECT };
	struct tcli srv, cli;
	struct tcli_msg *t;
	int64_t t0;
	int32_t h;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);

	/* Times out. */
	t0 = mp_time_now_ns();
	CU_ASSERT(tcli_connect(&cli, "never", 300, NULL, 3000) == ETIMEDOUT);
	CU_ASSERT(ms_since(t0) >= 290);
	CU_ASSERT(ms_since(t0) < 1500);
	/* LOCATE 0 is a plain lookup. */
	CU_ASSERT(tcli_connect(&cli, "never", 0, NULL, 3000) == ENOENT);

	/* Waits, then succeeds when the name appears; the connection keeps
	 * serving other requests meanwhile. */
	m.flags = MP_WIRE_F_LOCATE;
	m.a = 5000;
	snprintf(m.name, sizeof(m.name), "late");
	CU_ASSERT_FATAL(tcli_send(&cli, &m) > 0);
	CU_ASSERT(tcli_ping(&cli) == 0);
	usleep(200000);
	CU_ASSERT(tcli_create(&srv, "late", 0, &h) == 0);
	t0 = mp_time_now_ns();
	CU_ASSERT_FATAL(tcli_recv_op(&cli, MP_OP_CH_INFO, &t, 3000) == 0);
	CU_ASSERT(ms_since(t0) < 1000);
	CU_ASSERT(t->m.a == 0);
	CU_ASSERT(t->m.b == h);
	CU_ASSERT(t->m.reqid == m.reqid);
	tcli_msg_free(t);
	/* Forever (-1) also works, across workers. */
	CU_ASSERT(tcli_connect(&cli, "late", -1, NULL, 3000) == 0);

	tcli_close(&srv);
	tcli_close(&cli);
	stop();
}

/* ---- buffered messages ------------------------------------------------- */

/* Read one BDELIVER from srv. */
static struct tcli_msg *deliver(struct tcli *srv)
{
	struct tcli_msg *t = NULL;

	if (tcli_recv_op(srv, MP_OP_BDELIVER, &t, 3000) < 0)
		return NULL;
	return t;
}

static void test_bsend_order(void)
{
	enum { NCLI = 4, NMSG = 200 };
	struct tcli srv, cli[NCLI];
	int next[NCLI] = { 0 };
	uint64_t last_seq = 0;
	int32_t h;
	char buf[64];

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "bq", 4 * NMSG, &h) == 0);
	for (int i = 0; i < NCLI; i++) {
		char id[9];

		snprintf(id, sizeof(id), "c%d", i);
		CU_ASSERT_FATAL(tcli_hello(&cli[i], mgr.port, id, 0) == 0);
		CU_ASSERT_FATAL(tcli_connect(&cli[i], "bq", -2, NULL, 3000) ==
				0);
	}
	/* Pipelined: every client sends all, then collects the RESULTs in
	 * order. */
	for (int k = 0; k < NMSG; k++) {
		for (int i = 0; i < NCLI; i++) {
			struct mp_wire_msg m = { .op = MP_OP_BSEND };

			snprintf(buf, sizeof(buf), "msg %d from %d", k, i);
			m.b = h;
			m.a = k;
			m.c = -1;
			m.data = buf;
			m.datalen = (uint32_t)strlen(buf) + 1;
			CU_ASSERT_FATAL(tcli_send(&cli[i], &m) > 0);
		}
	}
	for (int i = 0; i < NCLI; i++) {
		for (int k = 0; k < NMSG; k++) {
			struct tcli_msg *t = NULL;

			CU_ASSERT_FATAL(tcli_recv_op(&cli[i], MP_OP_RESULT,
						     &t, 5000) == 0);
			CU_ASSERT(t->m.a == 0);
			CU_ASSERT(t->m.reqid == (uint32_t)(k + 3));
			tcli_msg_free(t);
		}
	}
	for (int n = 0; n < NCLI * NMSG; n++) {
		struct tcli_msg *t = deliver(&srv);
		int who = -1;

		CU_ASSERT_FATAL(t != NULL);
		for (int i = 0; i < NCLI; i++)
			if (t->m.c == cli[i].regno)
				who = i;
		CU_ASSERT_FATAL(who >= 0);
		CU_ASSERT(t->m.b == h);
		CU_ASSERT(t->m.a == next[who]); /* per-sender order */
		snprintf(buf, sizeof(buf), "msg %d from %d", next[who], who);
		CU_ASSERT(t->m.datalen == strlen(buf) + 1);
		CU_ASSERT(memcmp(t->m.data, buf, t->m.datalen) == 0);
		snprintf(buf, sizeof(buf), "c%d", who);
		CU_ASSERT_STRING_EQUAL(t->m.id, buf);
		CU_ASSERT(n == 0 || t->m.u == last_seq + 1);
		last_seq = t->m.u;
		next[who]++;
		if (n % 16 == 15 || n == NCLI * NMSG - 1)
			tcli_back(&srv, h, t->m.u);
		tcli_msg_free(t);
	}
	for (int i = 0; i < NCLI; i++) {
		CU_ASSERT(next[i] == NMSG);
		tcli_close(&cli[i]);
	}
	tcli_close(&srv);
	stop();
}

static void test_ring_full(void)
{
	enum { CAP = 4, NPARK = 3 };
	struct tcli srv, cli, park[NPARK];
	int32_t h, q;
	int64_t t0;
	uint64_t seq = 0;
	int got = 0;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "small", CAP, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "small", -2, NULL, 3000) == 0);
	for (int i = 0; i < CAP; i++) {
		CU_ASSERT(tcli_bsend(&cli, h, i, "x", 1, 0, &q, 3000) == 0);
		CU_ASSERT(q == i); /* queued before it */
	}
	/* Full: no wait -> at once; a wait -> at its deadline. */
	t0 = mp_time_now_ns();
	CU_ASSERT(tcli_bsend(&cli, h, 9, "x", 1, 0, NULL, 3000) == ETIMEDOUT);
	CU_ASSERT(ms_since(t0) < 200);
	t0 = mp_time_now_ns();
	CU_ASSERT(tcli_bsend(&cli, h, 9, "x", 1, 300, NULL, 3000) ==
		  ETIMEDOUT);
	CU_ASSERT(ms_since(t0) >= 290);
	CU_ASSERT(ms_since(t0) < 1500);

	/* Several parked senders, forever: all released in turn as the
	 * server acknowledges. */
	for (int i = 0; i < NPARK; i++) {
		struct mp_wire_msg m = { .op = MP_OP_BSEND };
		char id[9];

		snprintf(id, sizeof(id), "p%d", i);
		CU_ASSERT_FATAL(tcli_hello(&park[i], mgr.port, id, 0) == 0);
		CU_ASSERT_FATAL(tcli_connect(&park[i], "small", -2, NULL,
					     3000) == 0);
		m.b = h;
		m.a = 100 + i;
		m.c = -1;
		m.data = "p";
		m.datalen = 1;
		CU_ASSERT_FATAL(tcli_send(&park[i], &m) > 0);
	}
	usleep(200000);
	for (int i = 0; i < NPARK; i++) {
		struct tcli_msg *t = NULL;

		CU_ASSERT(tcli_recv_op(&park[i], MP_OP_RESULT, &t, 100) ==
			  -ETIMEDOUT);
		tcli_msg_free(t);
	}
	/* Ack one at a time; every parked sender gets through. */
	while (got < CAP + NPARK) {
		struct tcli_msg *t = deliver(&srv);

		CU_ASSERT_FATAL(t != NULL);
		CU_ASSERT(got == 0 || t->m.u == seq + 1);
		seq = t->m.u;
		tcli_back(&srv, h, seq);
		tcli_msg_free(t);
		got++;
	}
	for (int i = 0; i < NPARK; i++) {
		struct tcli_msg *t = NULL;

		CU_ASSERT(tcli_recv_op(&park[i], MP_OP_RESULT, &t, 3000) == 0);
		if (t)
			CU_ASSERT(t->m.a == 0);
		tcli_msg_free(t);
		tcli_close(&park[i]);
	}
	/* The channel goes away while a sender is parked: ESRCH.  Fill the
	 * ring first (waiting: the last BACKs may still be on their way to
	 * the server's worker). */
	for (int i = 0; i < CAP; i++)
		CU_ASSERT(tcli_bsend(&cli, h, i, "y", 1, 2000, NULL, 3000) == 0);
	{
		struct mp_wire_msg m = { .op = MP_OP_BSEND };
		struct tcli_msg *t = NULL;

		m.b = h;
		m.c = -1;
		m.data = "z";
		m.datalen = 1;
		CU_ASSERT_FATAL(tcli_send(&cli, &m) > 0);
		usleep(100000);
		CU_ASSERT(tcli_bye(&srv) == 0);
		CU_ASSERT(tcli_recv_op(&cli, MP_OP_RESULT, &t, 3000) == 0);
		if (t)
			CU_ASSERT(t->m.a == ESRCH);
		tcli_msg_free(t);
	}
	CU_ASSERT(tcli_bsend(&cli, h, 1, "y", 1, 0, NULL, 3000) == ESRCH);
	tcli_close(&srv);
	tcli_close(&cli);
	stop();
}

/* The server and a sender parked on its full ring share the only worker:
 * every record the server makes room for is streamed at once (not when
 * the park ends), and the parked sender completes. */
static void test_parked_same_worker(void)
{
	enum { CAP = 4, N = 24 };
	struct tcli srv, cli;
	int64_t worst = 0, t0;
	int32_t h;
	int got = 0, ok = 0;

	start(1, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "pw", CAP, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "pw", -2, NULL, 3000) == 0);
	/* Pipelined: CAP fill the ring, the next parks (5 s), the rest wait
	 * behind it. */
	for (int k = 0; k < N; k++) {
		struct mp_wire_msg m = { .op = MP_OP_BSEND };

		m.b = h;
		m.a = k;
		m.c = 5000;
		m.data = "r";
		m.datalen = 1;
		CU_ASSERT_FATAL(tcli_send(&cli, &m) > 0);
	}
	usleep(200000); /* the ring is full, a sender parked */
	t0 = mp_time_now_ns();
	while (got < N) {
		struct tcli_msg *t = NULL;
		int64_t dt;

		if (tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 3000) < 0)
			break;
		dt = ms_since(t0);
		if (dt > worst)
			worst = dt;
		CU_ASSERT(t->m.a == got);
		got++;
		usleep(20000); /* a slow consumer */
		tcli_back(&srv, h, t->m.u);
		tcli_msg_free(t);
		t0 = mp_time_now_ns();
	}
	fprintf(stderr, "parked, same worker: %d records, worst wait %lld "
			"ms\n",
		got, (long long)worst);
	CU_ASSERT(got == N);
	CU_ASSERT(worst < 200);
	for (int k = 0; k < N; k++) {
		struct tcli_msg *t = NULL;

		if (tcli_recv_op(&cli, MP_OP_RESULT, &t, 3000) == 0 &&
		    t->m.a == 0)
			ok++;
		tcli_msg_free(t);
	}
	CU_ASSERT(ok == N);
	tcli_close(&srv);
	tcli_close(&cli);
	stop();
}

/* A BSEND parked longer than the read deadline, whose frame came in two
 * pieces, is a complete request: it is not cut off as a partial frame. */
static void test_parked_outlives_read_deadline(void)
{
	struct mp_wire_msg m = { .op = MP_OP_BSEND };
	struct tcli srv, cli;
	struct tcli_msg *t = NULL;
	uint8_t buf[128];
	int32_t h;
	int n;

	start(2, "handshake_timeout_ms 200\n");
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "p1", 1, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "p1", -2, NULL, 3000) == 0);
	CU_ASSERT(tcli_bsend(&cli, h, 1, "a", 1, 0, NULL, 3000) == 0);
	m.reqid = 77;
	m.b = h;
	m.a = 2;
	m.c = 3000;
	m.data = "b";
	m.datalen = 1;
	n = mp_wire_encode(&m, buf, sizeof(buf));
	CU_ASSERT_FATAL(n > 10);
	CU_ASSERT(tcli_send_raw(&cli, buf, 10) == 0);
	usleep(50000);
	CU_ASSERT(tcli_send_raw(&cli, buf + 10, (size_t)n - 10) == 0);
	usleep(600000); /* three read deadlines */
	t = deliver(&srv);
	CU_ASSERT_FATAL(t != NULL);
	tcli_back(&srv, h, t->m.u);
	tcli_msg_free(t);
	t = NULL;
	CU_ASSERT(tcli_recv_op(&cli, MP_OP_RESULT, &t, 3000) == 0);
	if (t)
		CU_ASSERT(t->m.reqid == 77 && t->m.a == 0);
	tcli_msg_free(t);
	CU_ASSERT(tcli_ping(&cli) == 0);
	tcli_close(&srv);
	tcli_close(&cli);
	stop();
}

static void test_bsend_access_and_size(void)
{
	struct tcli srv, cli;
	static char big[2048];
	int32_t h;

	start(2, "max_message_size 1024\n");
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "acc", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	/* Not connected: EACCES. */
	CU_ASSERT(tcli_bsend(&cli, h, 1, "x", 1, 0, NULL, 3000) == EACCES);
	CU_ASSERT(tcli_bsend(&cli, 9999, 1, "x", 1, 0, NULL, 3000) == EACCES);
	CU_ASSERT(tcli_connect(&cli, "acc", -2, NULL, 3000) == 0);
	/* Over max_message_size: refused, connection still usable. */
	CU_ASSERT(tcli_bsend(&cli, h, 1, big, sizeof(big), 0, NULL, 3000) ==
		  EMSGSIZE);
	CU_ASSERT(tcli_ping(&cli) == 0);
	CU_ASSERT(tcli_bsend(&cli, h, 1, big, 1024, 0, NULL, 3000) == 0);
	CU_ASSERT(tcli_bsend(&cli, h, 2, NULL, 0, 0, NULL, 3000) == 0);
	{
		struct tcli_msg *t = deliver(&srv);

		CU_ASSERT_FATAL(t != NULL);
		CU_ASSERT(t->m.datalen == 1024);
		tcli_msg_free(t);
		t = deliver(&srv);
		CU_ASSERT_FATAL(t != NULL);
		CU_ASSERT(t->m.datalen == 0);
		CU_ASSERT(t->m.a == 2);
		tcli_msg_free(t);
	}
	tcli_close(&srv);
	tcli_close(&cli);
	stop();
}

/* ---- events ------------------------------------------------------------- */

static void test_dismissed_once(void)
{
	struct tcli srv, cli, srv2;
	int32_t h, h2, regno;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "d1", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv2, mgr.port, "srv2", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv2, "d2", 0, &h2) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "victim", 0) == 0);
	CU_ASSERT(tcli_connect(&cli, "d1", -2, NULL, 3000) == 0);
	CU_ASSERT(tcli_connect(&cli, "d1", -2, NULL, 3000) == 0);
	CU_ASSERT(tcli_connect(&cli, "d2", -2, NULL, 3000) == 0);
	regno = cli.regno;
	/* The client process "crashes": its connection just closes. */
	tcli_close(&cli);
	expect_event(&srv, h, EV_DISMISSED, regno, "victim");
	expect_event(&srv2, h2, EV_DISMISSED, regno, "victim");
	expect_no_event(&srv, 300);
	expect_no_event(&srv2, 10);
	tcli_close(&srv);
	tcli_close(&srv2);
	stop();
}

/* ---- a connection that ends without BYE ------------------------------- */

/* Register on a new connection as process pid with host token tok (0:
 * none sent) and connect to channel name.  0 or -1. */
static int hello_as(struct tcli *c, const char *id, pid_t pid, uint64_t tok,
		    const char *name)
{
	struct mp_wire_msg m = {.op = MP_OP_HELLO};
	struct tcli_msg *t = NULL;
	int rc;

	if (tcli_open(c, mgr.port) < 0)
		return -1;
	snprintf(m.id, sizeof(m.id), "%s", id);
	m.a = (int32_t)pid;
	if (tok)
		snprintf(m.name, sizeof(m.name), "%llu",
			 (unsigned long long)tok);
	if (tcli_send(c, &m) < 0 ||
	    tcli_recv_op(c, MP_OP_WELCOME, &t, 3000) < 0)
		return -1;
	rc = t->m.a == 0 ? 0 : -1;
	c->regno = t->m.b;
	tcli_msg_free(t);
	if (rc == 0 && tcli_connect(c, name, -2, NULL, 3000) != 0)
		rc = -1;
	return rc;
}

/* End c's link with a reset, with an answer left unread (as the kernel
 * of a process killed with unread input does). */
static void reset_link(struct tcli *c)
{
	struct mp_wire_msg m = {.op = MP_OP_PING};
	struct linger lg = {1, 0};

	CU_ASSERT(tcli_send(c, &m) > 0);
	usleep(50000); /* the PONG waits, unread */
	CU_ASSERT(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) ==
		  0);
	tcli_close(c);
}

/* A child that only waits to be killed: a pid for a HELLO. */
static pid_t sleeper(void)
{
	pid_t pid = mp_test_fork();

	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

static void kill_sleeper(pid_t pid)
{
	kill(pid, SIGKILL);
	mp_test_wait(pid, 5000); /* reaped: the pid is gone */
}

/* Wait for the DISMISSED of regno on srv's channel h: ms it took. */
static int64_t dismissed_after(struct tcli *srv, int32_t h, int32_t regno,
			       int64_t t0)
{
	struct tcli_msg *t = NULL;
	int rc = tcli_recv_op(srv, MP_OP_EVENT, &t, 6000);

	CU_ASSERT_FATAL(rc == 0);
	CU_ASSERT(t->m.a == EV_DISMISSED);
	CU_ASSERT(t->m.b == h);
	CU_ASSERT(t->m.c == regno);
	tcli_msg_free(t);
	return ms_since(t0);
}

/*
 * The rule (protocol.md, "Registration"): an orderly end of stream ends
 * the registration at once; a reset is held for the grace period unless
 * the peer is on this host and its pid is gone; a peer on another host
 * is never looked up by pid.  resume_grace_ms 2000 here: "at once" is
 * well under it, "held" at least it.
 */
static void test_link_end_rule(void)
{
	struct tcli srv, c;
	uint64_t tok = 0;
	int64_t t0, ms;
	int32_t h;
	pid_t pid;

	CU_ASSERT_FATAL(mp_host_token(&tok) == 0 && tok != 0);
	start(2, "resume_grace_ms 2000\n");
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "lr", 0, &h) == 0);

	/* Orderly end of stream of a living process: at once. */
	CU_ASSERT_FATAL(hello_as(&c, "eof", getpid(), tok, "lr") == 0);
	t0 = mp_time_now_ns();
	CU_ASSERT(shutdown(c.fd, SHUT_WR) == 0);
	ms = dismissed_after(&srv, h, c.regno, t0);
	CU_ASSERT(ms < 1000);
	tcli_close(&c);

	/* Reset, same host, process gone: at once. */
	pid = sleeper();
	CU_ASSERT_FATAL(hello_as(&c, "gone", pid, tok, "lr") == 0);
	kill_sleeper(pid);
	t0 = mp_time_now_ns();
	reset_link(&c);
	ms = dismissed_after(&srv, h, c.regno, t0);
	fprintf(stderr,
		"  reset, same host, pid gone: DISMISSED after "
		"%lld ms\n",
		(long long)ms);
	CU_ASSERT(ms < 1000);

	/* Reset, same host, process alive: held; ended early once the
	 * process is gone (housekeeping), still within the grace. */
	pid = sleeper();
	CU_ASSERT_FATAL(hello_as(&c, "alive", pid, tok, "lr") == 0);
	reset_link(&c);
	expect_no_event(&srv, 700);
	t0 = mp_time_now_ns();
	kill_sleeper(pid);
	ms = dismissed_after(&srv, h, c.regno, t0);
	fprintf(stderr,
		"  reset, same host, pid alive then gone: DISMISSED "
		"%lld ms after its death\n",
		(long long)ms);
	CU_ASSERT(ms < 1000);

	/* Reset, another host (its pid is the one of a process gone here,
	 * which must not matter): held for the grace period. */
	pid = sleeper();
	kill_sleeper(pid);
	CU_ASSERT_FATAL(hello_as(&c, "remote", pid, tok + 1, "lr") == 0);
	t0 = mp_time_now_ns();
	reset_link(&c);
	ms = dismissed_after(&srv, h, c.regno, t0);
	fprintf(stderr, "  reset, other host: DISMISSED after %lld ms\n",
		(long long)ms);
	CU_ASSERT(ms >= 1900);

	/* No host token at all (an older library): as another host. */
	pid = sleeper();
	kill_sleeper(pid);
	CU_ASSERT_FATAL(hello_as(&c, "old", pid, 0, "lr") == 0);
	t0 = mp_time_now_ns();
	reset_link(&c);
	CU_ASSERT(dismissed_after(&srv, h, c.regno, t0) >= 1900);
	expect_no_event(&srv, 100);
	tcli_close(&srv);
	stop();
}

static void test_bye_disconnects(void)
{
	struct tcli srv, cli;
	int32_t h, regno;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "b1", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "polite", 0) == 0);
	CU_ASSERT(tcli_connect(&cli, "b1", -2, NULL, 3000) == 0);
	CU_ASSERT(tcli_create(&cli, "owned-by-cli", 0, NULL) == 0);
	regno = cli.regno;
	CU_ASSERT(tcli_bye(&cli) == 0);
	CU_ASSERT(tcli_wait_closed(&cli, 2000) == 0);
	tcli_close(&cli);
	/* BYE: DISCONNECT (not DISMISSED), and its channels are gone. */
	expect_event(&srv, h, EV_DISCONNECT, regno, "polite");
	expect_no_event(&srv, 200);
	CU_ASSERT(tcli_connect(&srv, "owned-by-cli", -2, NULL, 3000) ==
		  ENOENT);
	CU_ASSERT(tcli_create(&srv, "owned-by-cli", 0, NULL) == 0);
	tcli_close(&srv);
	stop();
}

static void test_death_notify(void)
{
	struct tcli watch, quiet, dying, polite;
	int32_t h, hq, regno;

	start(2, NULL);
	CU_ASSERT_FATAL(tcli_hello(&watch, mgr.port, "watch", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&watch, "w1", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&quiet, mgr.port, "quiet", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&quiet, "q1", 0, &hq) == 0);
	{
		struct mp_wire_msg m = { .op = MP_OP_DEATH_NOTIFY };
		struct tcli_msg *t;

		m.a = 1;
		CU_ASSERT_FATAL(tcli_call(&watch, &m, &t, 3000) == 0);
		CU_ASSERT(t->m.op == MP_OP_RESULT && t->m.a == 0);
		tcli_msg_free(t);
	}
	CU_ASSERT_FATAL(tcli_hello(&dying, mgr.port, "dying", 0) == 0);
	CU_ASSERT_FATAL(tcli_hello(&polite, mgr.port, "polite", 0) == 0);
	regno = dying.regno;
	tcli_close(&dying);
	expect_event(&watch, h, EV_DEATH_PROCESS, regno, "dying");
	/* A clean end is no death; a channel without death-notify hears
	 * nothing. */
	CU_ASSERT(tcli_bye(&polite) == 0);
	tcli_close(&polite);
	expect_no_event(&watch, 300);
	expect_no_event(&quiet, 10);
	tcli_close(&watch);
	tcli_close(&quiet);
	stop();
}

/* ---- bad input ----------------------------------------------------------- */

/* Open a connection, optionally HELLO, send bytes; expect the manager to
 * close it within max_ms while `good` keeps being served. */
static void bad_case(struct tcli *good, int hello, const void *bytes,
		     size_t len, int max_ms, const char *what)
{
	struct tcli bad;
	int64_t t0;
	int rc;

	if (hello) {
		CU_ASSERT_FATAL(tcli_hello(&bad, mgr.port, "bad", 0) == 0);
	} else {
		CU_ASSERT_FATAL(tcli_open(&bad, mgr.port) == 0);
	}
	t0 = mp_time_now_ns();
	if (len)
		CU_ASSERT(tcli_send_raw(&bad, bytes, len) == 0);
	CU_ASSERT(tcli_ping(good) == 0);
	rc = tcli_wait_closed(&bad, max_ms + 1000);
	if (rc != 0 || ms_since(t0) > max_ms)
		fprintf(stderr, "bad input '%s': closed rc %d after %lld ms\n",
			what, rc, (long long)ms_since(t0));
	CU_ASSERT(rc == 0);
	CU_ASSERT(ms_since(t0) <= max_ms);
	CU_ASSERT(tcli_ping(good) == 0);
	tcli_close(&bad);
}

static void test_bad_input(void)
{
	static const uint8_t garbage[] = "GET / HTTP/1.0\r\n\r\n";
	uint8_t hdr[MP_WIRE_HDR_SIZE];
	struct mp_wire_msg m = { .op = MP_OP_PING };
	struct tcli good;
	int n;

	start(2, "handshake_timeout_ms 400\n");
	CU_ASSERT_FATAL(tcli_hello(&good, mgr.port, "good", 0) == 0);

	bad_case(&good, 0, garbage, sizeof(garbage) - 1, 300, "garbage");
	bad_case(&good, 1, garbage, sizeof(garbage) - 1, 300,
		 "garbage after HELLO");
	/* Length field 0xFFFFFFFF (BSEND, a data op). */
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_PING;
	n = mp_wire_encode_head(&m, hdr, sizeof(hdr));
	CU_ASSERT_FATAL(n == MP_WIRE_HDR_SIZE);
	hdr[1] = MP_OP_BSEND;
	memset(hdr + 8, 0xff, 4);
	bad_case(&good, 1, hdr, sizeof(hdr), 300, "length 0xFFFFFFFF");
	bad_case(&good, 0, hdr, sizeof(hdr), 300,
		 "length 0xFFFFFFFF before HELLO");
	/* Unknown operation. */
	hdr[1] = 0xee;
	memset(hdr + 8, 0, 4);
	bad_case(&good, 1, hdr, sizeof(hdr), 300, "unknown op");
	/* An operation a library never sends. */
	hdr[1] = MP_OP_BDELIVER;
	bad_case(&good, 1, hdr, sizeof(hdr), 300, "BDELIVER from a client");
	/* First frame not HELLO. */
	hdr[1] = MP_OP_PING;
	bad_case(&good, 0, hdr, sizeof(hdr), 300, "PING before HELLO");
	/* A frame cut off mid-way: closed at the read deadline. */
	hdr[1] = MP_OP_PING;
	bad_case(&good, 1, hdr, 7, 400 + 400, "cut header");
	{
		struct mp_wire_msg b = { .op = MP_OP_BSEND };
		uint8_t buf[256];

		b.b = 0;
		b.data = "0123456789";
		b.datalen = 10;
		n = mp_wire_encode(&b, buf, sizeof(buf));
		bad_case(&good, 1, buf, (size_t)n - 3, 400 + 400,
			 "cut payload");
	}
	/* Connects and says nothing: the handshake deadline. */
	bad_case(&good, 0, NULL, 0, 400 + 400, "silent");
	CU_ASSERT(tcli_bye(&good) == 0);
	tcli_close(&good);
	stop();
}

/* A peer that sends requests but never reads the answers is dropped once
 * its output has not moved for write_timeout_ms; memory stays bounded. */
static void test_slow_reader(void)
{
	struct mp_wire_msg m = { .op = MP_OP_PING };
	struct tcli good, slow;
	uint8_t frame[MP_WIRE_HDR_SIZE * 256];
	int rcv = 4096, closed = 0;
	size_t off = 0;
	int64_t t0;

	start(2, "write_timeout_ms 500\n");
	CU_ASSERT_FATAL(tcli_hello(&good, mgr.port, "good", 0) == 0);
	CU_ASSERT_FATAL(tcli_hello(&slow, mgr.port, "slow", 0) == 0);
	setsockopt(slow.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	fcntl(slow.fd, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 256; i++)
		mp_wire_encode(&m, frame + i * MP_WIRE_HDR_SIZE,
			       MP_WIRE_HDR_SIZE);
	t0 = mp_time_now_ns();
	while (!closed && ms_since(t0) < 10000) {
		ssize_t n = send(slow.fd, frame + off, sizeof(frame) - off,
				 MSG_NOSIGNAL);

		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			closed = 1;
		else if (n < 0)
			usleep(20000);
		else
			off = (off + (size_t)n) % sizeof(frame);
	}
	fprintf(stderr, "slow reader dropped after %lld ms\n",
		(long long)ms_since(t0));
	CU_ASSERT(closed);
	CU_ASSERT(tcli_ping(&good) == 0);
	tcli_close(&slow);
	tcli_close(&good);
	stop();
}

/* Connections over max_connections are closed at once. */
static void test_max_connections(void)
{
	struct tcli c[4], extra;

	start(2, "max_connections 4\n");
	for (int i = 0; i < 4; i++)
		CU_ASSERT_FATAL(tcli_hello(&c[i], mgr.port, "c", 0) == 0);
	CU_ASSERT_FATAL(tcli_open(&extra, mgr.port) == 0);
	CU_ASSERT(tcli_wait_closed(&extra, 2000) == 0);
	tcli_close(&extra);
	tcli_close(&c[3]);
	usleep(100000);
	CU_ASSERT(tcli_hello(&extra, mgr.port, "again", 0) == 0);
	CU_ASSERT(tcli_ping(&extra) == 0);
	tcli_close(&extra);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT(tcli_ping(&c[i]) == 0);
		tcli_close(&c[i]);
	}
	stop();
}

/* ---- many connections ------------------------------------------------------ */

static void test_1000_connections(void)
{
	enum { N = 1000 };
	struct tcli *c = calloc(N, sizeof(*c));
	struct rlimit rl;
	int ok = 0, regs_ok = 1;
	int32_t h;

	CU_ASSERT_FATAL(c != NULL);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < N + 64) {
		rl.rlim_cur = rl.rlim_max < N + 256 ? rl.rlim_max : N + 256;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < N + 64) {
		fprintf(stderr, "skipping: RLIMIT_NOFILE %lu\n",
			(unsigned long)rl.rlim_cur);
		free(c);
		return;
	}
	start(2, NULL);
	/* Every connection registers; half of them create a channel and
	 * the others connect to one and send to it. */
	for (int i = 0; i < N; i++) {
		struct mp_wire_msg m = { .op = MP_OP_HELLO };

		CU_ASSERT_FATAL(tcli_open(&c[i], mgr.port) == 0);
		snprintf(m.id, sizeof(m.id), "n%d", i);
		CU_ASSERT_FATAL(tcli_send(&c[i], &m) > 0);
	}
	for (int i = 0; i < N; i++) {
		struct tcli_msg *t = NULL;

		if (tcli_recv_op(&c[i], MP_OP_WELCOME, &t, 10000) == 0 &&
		    t->m.a == 0) {
			c[i].regno = t->m.b;
			ok++;
		}
		tcli_msg_free(t);
	}
	CU_ASSERT(ok == N);
	for (int i = 1; i < N; i++)
		if (c[i].regno == c[i - 1].regno)
			regs_ok = 0;
	CU_ASSERT(regs_ok);
	CU_ASSERT(tcli_create(&c[0], "hub", 2 * N, &h) == 0);
	ok = 0;
	for (int i = 1; i < N; i++)
		if (tcli_connect(&c[i], "hub", -2, NULL, 5000) == 0 &&
		    tcli_bsend(&c[i], h, i, "hi", 2, 0, NULL, 5000) == 0 &&
		    tcli_ping(&c[i]) == 0)
			ok++;
	CU_ASSERT(ok == N - 1);
	ok = 0;
	for (int i = 1; i < N; i++) {
		struct tcli_msg *t = deliver(&c[0]);

		if (!t)
			break;
		ok++;
		if (i % 64 == 0 || i == N - 1)
			tcli_back(&c[0], h, t->m.u);
		tcli_msg_free(t);
	}
	CU_ASSERT(ok == N - 1);
	for (int i = 0; i < N; i++)
		tcli_close(&c[i]);
	free(c);
	stop();
}

static const struct mp_test_case tests[] = {
	{ "HELLO/WELCOME, PING, resume token rules", test_hello_welcome_ping },
	{ "create, connect, delete, disconnect", test_create_connect_delete },
	{ "LOCATE waits, succeeds, times out", test_locate },
	{ "buffered: pipelined senders, order, seq", test_bsend_order },
	{ "buffered: full ring, parked senders", test_ring_full },
	{ "buffered: parked sender and server on one worker: no stall",
	  test_parked_same_worker },
	{ "buffered: parked request outlives the read deadline",
	  test_parked_outlives_read_deadline },
	{ "buffered: access and size", test_bsend_access_and_size },
	{ "client dies: DISMISSED exactly once", test_dismissed_once },
	{ "link ends without BYE: end of stream, reset, host and pid",
	  test_link_end_rule },
	{ "BYE: DISCONNECT, channels removed", test_bye_disconnects },
	{ "DEATH_PROCESS to death-notify channels", test_death_notify },
	{ "bad input closes only that connection", test_bad_input },
	{ "peer that never reads is dropped", test_slow_reader },
	{ "max_connections enforced", test_max_connections },
	{ "1000 concurrent connections", test_1000_connections },
	MP_TEST_END
};

int main(void)
{
	mp_test_init("test_mgr_proto", 120);
	return mp_test_main("mgr_proto", tests);
}
