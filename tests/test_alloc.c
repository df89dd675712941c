/*
 * test_alloc — every allocation failing in turn (issue 6): the hook of
 * shm/mp_alloc.h fails the n-th allocation, for n = 1, 2, ... until the
 * operation completes without the hook firing.  Each failure must give a
 * clean error and nothing else:
 *
 *   - the wire codec: encoding and decoding allocate nothing at all;
 *   - a manager worker (played in-process by tests/mp_mgrloop, a real
 *     segment) serving a scripted session of a server and a client
 *     (register, create, connect, buffered send, delivery and its
 *     acknowledgement, ping, disconnect event, delete, BYE): every answer
 *     is the right one or says ENOMEM, or the worker closes that one
 *     connection; then, with the hook off, the same session on new
 *     connections must succeed completely (nothing was left half-made in
 *     the segment: names free, rings usable);
 *   - the library (a static build of lib/, so that the test and the
 *     library share the hook) doing connect, create, connect, send,
 *     buffered send, receive and reply against a real manager and a
 *     server process: each call succeeds or fails with ENOMEM, and
 *     everything is released (the sanitizer build checks for leaks).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp_alloc.h"
#include "mp_mgrloop.h"
#include "mp_mgrscript.h"
#include "mp_wire.h"
#include "test_api_util.h"

#define MAX_N 2000

/* ---- the codec ------------------------------------------------------------ */

static void test_codec_allocates_nothing(void)
{
	static uint8_t data[4096], buf[MP_SCRIPT_FRAME_MAX];

	for (unsigned op = MP_OP_HELLO; op < MP_OP_MAX_; op++) {
		unsigned f = mp_wire_fields(op);
		struct mp_wire_msg m = mp_script_msg(op, 7), d;
		size_t size;
		int enc, dec;

		m.a = 1;
		m.b = 2;
		m.c = 3;
		m.u = 4;
		snprintf(m.name, sizeof(m.name), "chan");
		snprintf(m.id, sizeof(m.id), "proc");
		snprintf(m.addr, sizeof(m.addr), "127.0.0.1:1");
		if (f & MP_WF_DATA) {
			m.data = data;
			m.datalen = sizeof(data);
		}
		/* n = 1 fails the very first allocation: none may happen. */
		mp_alloc_fail_nth(1);
		size = mp_wire_size(&m);
		enc = mp_wire_encode(&m, buf, sizeof(buf));
		dec = mp_wire_decode(buf, (size_t)(enc > 0 ? enc : 0),
				     sizeof(data), &d);
		CU_ASSERT(mp_alloc_failed() == 0);
		CU_ASSERT(mp_alloc_count() == 0);
		mp_alloc_fail_nth(0);
		CU_ASSERT(enc > 0 && (size_t)enc == size);
		CU_ASSERT(dec == enc);
		CU_ASSERT(d.op == op && d.reqid == 7);
	}
}

/* ---- a manager worker ------------------------------------------------------ */

struct mpeer {
	int fd;
	struct mgr_conn *c;
	uint8_t in[16384];
	size_t len;
};

static struct mp_mgrloop loop;
static uint32_t rq;

/* Next frame the worker sent p; 1, or 0 when none came (or p closed). */
static int next_frame(struct mpeer *p, struct mp_wire_msg *m)
{
	static uint8_t hold[sizeof(((struct mpeer *)0)->in)];

	for (int tries = 0; tries < 20; tries++) {
		int n = mp_wire_decode(p->in, p->len, 65536, m);

		if (n > 0) {
			/* m->data points into p->in: keep a copy of the
			 * frame until the caller is done with it. */
			memcpy(hold, p->in, (size_t)n);
			if (m->datalen)
				m->data = hold + ((const uint8_t *)m->data -
						  p->in);
			memmove(p->in, p->in + n, p->len - (size_t)n);
			p->len -= (size_t)n;
			return 1;
		}
		CU_ASSERT_FATAL(n == 0);
		p->len += mp_mgrloop_drain(p->fd, p->in + p->len,
					   sizeof(p->in) - p->len);
		/* Work held back for lack of memory resumes on the tick. */
		if (tries)
			mp_mgrloop_pass(&loop, tries > 1);
	}
	return 0;
}

/* Send m on p and let the worker handle it.  1: sent (the worker may
 * have closed p after answering, as after BYE); 0: p was closed. */
static int put(struct mpeer *p, const struct mp_wire_msg *m)
{
	uint8_t buf[MP_SCRIPT_FRAME_MAX];
	size_t n = mp_script_encode(m, buf);

	if (!mp_mgrloop_alive(&loop, p->c))
		return 0;
	CU_ASSERT_FATAL(send(p->fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	mp_mgrloop_serve(&loop, p->c);
	return 1;
}

/*
 * The answer (operation op) to request reqid on p.  Returns 1 (status 0),
 * 0 (a clean failure: ENOMEM, or the connection was closed), -1
 * (anything else: recorded as a test failure).
 */
static int await(struct mpeer *p, uint32_t reqid, unsigned op,
		 struct mp_wire_msg *r)
{
	int more;

	/* Events (DISCONNECT of a client) may come first: acknowledge. */
	while ((more = next_frame(p, r)) && r->op == MP_OP_EVENT &&
	       op != MP_OP_EVENT) {
		struct mp_wire_msg b = mp_script_msg(MP_OP_BACK, ++rq);

		b.flags = MP_WIRE_F_EVENT;
		b.b = r->b;
		b.u = r->u;
		if (!put(p, &b))
			return 0;
	}
	if (!more)
		return mp_mgrloop_alive(&loop, p->c) ? -1 : 0;
	if (r->op != op || r->reqid != reqid) {
		fprintf(stderr, "expected %s to %u, got %s to %u\n",
			mp_wire_op_name(op), reqid, mp_wire_op_name(r->op),
			r->reqid);
		return -1;
	}
	if (r->a == 0)
		return 1;
	if (r->a == ENOMEM)
		return 0;
	fprintf(stderr, "%s to %u: status %d\n", mp_wire_op_name(r->op),
		reqid, r->a);
	return -1;
}

/* One request and its answer (as await). */
static int ask(struct mpeer *p, struct mp_wire_msg *m, unsigned op,
	       struct mp_wire_msg *r)
{
	if (!put(p, m))
		return 0;
	return await(p, m->reqid, op, r);
}

/* Step result helper: stop the session at the first non-success. */
#define STEP(x)                                                                \
	do {                                                                   \
		int rc_ = (x);                                                 \
		if (rc_ <= 0) {                                                \
			if (rc_ < 0 || getenv("MP_TEST_VERBOSE"))       \
				fprintf(stderr, "session step %s failed\n",    \
					#x);                                   \
			return rc_;                                            \
		}                                                              \
	} while (0)

static int mpeer_open(struct mpeer *p)
{
	p->len = 0;
	p->fd = mp_mgrloop_connect(&loop, &p->c);
	if (p->fd == -ENOMEM)
		return 0;
	CU_ASSERT_FATAL(p->fd >= 0);
	return 1;
}

static int hello(struct mpeer *p, const char *id)
{
	struct mp_wire_msg m = mp_script_msg(MP_OP_HELLO, ++rq), r;

	snprintf(m.id, sizeof(m.id), "%s", id);
	m.a = (int32_t)getpid();
	return ask(p, &m, MP_OP_WELCOME, &r);
}

/* The session: 1 complete, 0 stopped by a clean failure, -1 wrong. */
static int mgr_session(struct mpeer *s, struct mpeer *c)
{
	struct mp_wire_msg m, r;
	int32_t slot;
	uint64_t seq;

	STEP(mpeer_open(s));
	STEP(hello(s, "srv"));
	m = mp_script_msg(MP_OP_DEATH_NOTIFY, ++rq);
	m.a = 1;
	STEP(ask(s, &m, MP_OP_RESULT, &r));
	m = mp_script_msg(MP_OP_CH_CREATE, ++rq);
	snprintf(m.name, sizeof(m.name), "alloc");
	snprintf(m.addr, sizeof(m.addr), "127.0.0.1:9");
	m.a = 4;
	STEP(ask(s, &m, MP_OP_RESULT, &r));
	slot = r.b;

	STEP(mpeer_open(c));
	STEP(hello(c, "cli"));
	m = mp_script_msg(MP_OP_CH_CONNECT, ++rq);
	snprintf(m.name, sizeof(m.name), "alloc");
	STEP(ask(c, &m, MP_OP_CH_INFO, &r));
	if (r.b != slot)
		return -1;
	m = mp_script_msg(MP_OP_BSEND, ++rq);
	m.a = 42;
	m.b = slot;
	m.data = "buffered";
	m.datalen = 8;
	STEP(ask(c, &m, MP_OP_RESULT, &r));

	/* The worker streams the record to the server's connection. */
	if (!next_frame(s, &r))
		return mp_mgrloop_alive(&loop, s->c) ? -1 : 0;
	if (r.op != MP_OP_BDELIVER || r.a != 42 || r.datalen != 8 ||
	    memcmp(r.data, "buffered", 8) != 0)
		return -1;
	seq = r.u;
	m = mp_script_msg(MP_OP_BACK, ++rq);
	m.b = slot;
	m.u = seq;
	STEP(put(s, &m));

	/* A LOCATE waiter, answered when the server creates the name. */
	m = mp_script_msg(MP_OP_CH_CONNECT, ++rq);
	snprintf(m.name, sizeof(m.name), "alloc-late");
	m.flags = MP_WIRE_F_LOCATE;
	m.a = -1;
	STEP(put(c, &m));
	m = mp_script_msg(MP_OP_CH_CREATE, ++rq);
	snprintf(m.name, sizeof(m.name), "alloc-late");
	snprintf(m.addr, sizeof(m.addr), "127.0.0.1:9");
	STEP(ask(s, &m, MP_OP_RESULT, &r));
	STEP(await(c, rq - 1, MP_OP_CH_INFO, &r));

	m = mp_script_msg(MP_OP_PING, ++rq);
	STEP(ask(c, &m, MP_OP_PONG, &r));
	m = mp_script_msg(MP_OP_CH_DISCONNECT, ++rq);
	m.b = slot;
	STEP(ask(c, &m, MP_OP_RESULT, &r));
	/* The server hears of it, exactly as the protocol says. */
	if (!next_frame(s, &r))
		return mp_mgrloop_alive(&loop, s->c) ? -1 : 0;
	if (r.op != MP_OP_EVENT || r.a != -2 || r.b != slot)
		return -1;
	m = mp_script_msg(MP_OP_BACK, ++rq);
	m.flags = MP_WIRE_F_EVENT;
	m.b = slot;
	m.u = r.u;
	STEP(put(s, &m));

	m = mp_script_msg(MP_OP_BYE, ++rq);
	STEP(ask(c, &m, MP_OP_RESULT, &r));
	m = mp_script_msg(MP_OP_CH_DELETE, ++rq);
	snprintf(m.name, sizeof(m.name), "alloc");
	STEP(ask(s, &m, MP_OP_RESULT, &r));
	if (r.b != 0)
		return -1;
	m = mp_script_msg(MP_OP_BYE, ++rq);
	STEP(ask(s, &m, MP_OP_RESULT, &r));
	return 1;
}

/* Hang both peers up and let the worker see it. */
static void mgr_session_end(struct mpeer *s, struct mpeer *c)
{
	struct mpeer *ps[2] = {s, c};

	for (int i = 0; i < 2; i++) {
		struct mpeer *p = ps[i];

		if (p->fd < 0)
			continue;
		if (mp_mgrloop_alive(&loop, p->c)) {
			CU_ASSERT(!mp_mgrloop_hangup(&loop, p->fd, p->c));
		} else {
			mp_mgrloop_release(&loop, p->fd);
		}
		p->fd = -1;
	}
	mp_mgrloop_pass(&loop, 1);
	CU_ASSERT(loop.w.conns == NULL);
}

static void test_mgr_worker_every_allocation_fails(void)
{
	char name[96];
	uint64_t n;
	int fired = 1, failures = 0;

	mp_test_shm_name(name, sizeof(name), "alloc");
	CU_ASSERT_FATAL(mp_mgrloop_start(&loop, name) == 0);
	for (n = 1; n <= MAX_N && fired; n++) {
		struct mpeer s = {.fd = -1}, c = {.fd = -1};
		int rc;

		mp_alloc_fail_nth(n);
		rc = mgr_session(&s, &c);
		fired = mp_alloc_failed();
		mp_alloc_fail_nth(0);
		if (rc < 0 || (!fired && rc != 1)) {
			fprintf(stderr, "n=%llu: session %d (fired %d)\n",
				(unsigned long long)n, rc, fired);
			failures++;
		}
		if (rc == 0)
			CU_ASSERT(fired);
		mgr_session_end(&s, &c);
		/* The worker serves the next client as if nothing happened. */
		rc = mgr_session(&s, &c);
		if (rc != 1) {
			fprintf(stderr, "n=%llu: the next session: %d\n",
				(unsigned long long)n, rc);
			failures++;
		}
		mgr_session_end(&s, &c);
	}
	printf("manager session: %llu allocations, each failed once\n",
	       (unsigned long long)(n - 2));
	CU_ASSERT(!fired);
	CU_ASSERT(n > 3);
	CU_ASSERT(failures == 0);
	mp_mgrloop_stop(&loop);
}

/* ---- the library ------------------------------------------------------------ */

#define T_ECHO 1     /* echo it back */
#define T_CALLME 2   /* reply, then send T_PING to the channel named */
#define T_PING 3
#define T_QUIT 99

/* The server process (no hook armed in it): echoes, and calls back. */
static void echo_server(void *arg)
{
	struct api_gate *ready = arg;
	messip_cnx_t *cnx = api_connect("echo");
	messip_channel_t *ch;

	CHILD_CHECK(cnx != NULL);
	ch = messip_channel_create(cnx, "alloc-echo", 2000, 0);
	CHILD_CHECK(ch != NULL);
	api_gate_signal(ready);
	for (;;) {
		char buf[256], name[64];
		int32_t type = 0, ans;
		int idx = messip_receive(ch, &type, buf, sizeof(buf) - 1, -1);

		if (idx < 0)
			continue;
		if (type == T_QUIT) {
			messip_reply(ch, idx, 0, NULL, 0, 1000);
			break;
		}
		if (type != T_CALLME) {
			messip_reply(ch, idx, type, buf, ch->datalenr, 1000);
			continue;
		}
		buf[ch->datalenr < 63 ? ch->datalenr : 63] = 0;
		memcpy(name, buf, 64);
		messip_reply(ch, idx, 0, NULL, 0, 1000);
		messip_channel_t *cc = messip_channel_connect(cnx, name, 1000);

		if (cc) {
			messip_send(cc, T_PING, "ping", 4, &ans, buf,
				    sizeof(buf), 1000);
			messip_channel_disconnect(cc, 1000);
		}
	}
	messip_disconnect(cnx, 2000);
}

/* A step of the library session: stop at the first failure, which must
 * be ENOMEM (errno is cleared before each step). */
#define LSTEP(cond)                                                            \
	do {                                                                   \
		errno = 0;                                                     \
		if (!(cond)) {                                                 \
			if (errno != ENOMEM) {                                 \
				fprintf(stderr, "library step %s: %s\n",       \
					#cond, strerror(errno));               \
				rc = -1;                                       \
			}                                                      \
			goto out;                                              \
		}                                                              \
	} while (0)

/* 1 complete, 0 stopped by ENOMEM, -1 anything else. */
static int lib_session(void)
{
	messip_cnx_t *cnx = NULL;
	messip_channel_t *own = NULL, *echo = NULL;
	char buf[64];
	int32_t ans = 0, type = 0;
	int rc = 0, idx = -1;

	LSTEP((cnx = api_connect("alloc")) != NULL);
	LSTEP((own = messip_channel_create(cnx, "alloc-own", 2000, 0)) !=
	      NULL);
	LSTEP((echo = messip_channel_connect(cnx, "alloc-echo", 2000)) !=
	      NULL);
	LSTEP(messip_send(echo, T_ECHO, "hello", 5, &ans, buf, sizeof(buf),
			  2000) == 0);
	if (ans != T_ECHO || echo->datalenr != 5 || memcmp(buf, "hello", 5)) {
		fprintf(stderr, "library: wrong echo\n");
		rc = -1;
		goto out;
	}
	LSTEP(messip_buffered_send(echo, 5, "buffered", 8, 2000) >= 0);
	LSTEP(messip_send(echo, T_CALLME, "alloc-own", 9, &ans, NULL, 0,
			  2000) == 0);
	idx = messip_receive(own, &type, buf, sizeof(buf), 3000);
	if (idx == MESSIP_MSG_DISCONNECT && mp_alloc_failed()) {
		/* The call-back never came: this server dropped the
		 * caller's link when it could not take its request (out of
		 * memory), the caller saw ESRCH and went away. */
		goto out;
	}
	LSTEP(idx >= 0);
	if (type != T_PING || own->datalenr != 4) {
		fprintf(stderr, "library: received %d type %d\n", idx, type);
		rc = -1;
		goto out;
	}
	LSTEP(messip_reply(own, idx, 7, "pong", 4, 2000) == 0);
	rc = 1;
out:
	/* Cleanup may meet the failure too: it must free all the same. */
	if (echo)
		messip_channel_disconnect(echo, 2000);
	if (cnx)
		messip_disconnect(cnx, 2000);
	return rc;
}

static void lib_every_allocation_fails(const char *mode)
{
	struct api_gate ready;
	messip_cnx_t *cnx;
	messip_channel_t *echo;
	pid_t srv;
	uint64_t n;
	int fired = 1, failures = 0, completed = 0;

	api_start_mgr(1, NULL);
	api_gate_init(&ready);
	srv = api_fork(echo_server, &ready);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 5000));
	for (n = 1; n <= MAX_N && fired; n++) {
		int rc;

		mp_alloc_fail_nth(n);
		rc = lib_session();
		fired = mp_alloc_failed();
		mp_alloc_fail_nth(0);
		if (rc < 0 || (!fired && rc != 1)) {
			fprintf(stderr, "%s n=%llu: session %d (fired %d)\n",
				mode, (unsigned long long)n, rc, fired);
			failures++;
		}
		completed += rc == 1;
	}
	printf("library session (%s): %llu allocations, each failed once; "
	       "%d sessions completed anyway\n",
	       mode, (unsigned long long)(n - 2), completed);
	CU_ASSERT(!fired);
	CU_ASSERT(n > 3);
	CU_ASSERT(failures == 0);
	/* The server is unharmed and still answers. */
	cnx = api_connect("alloc");
	CU_ASSERT_FATAL(cnx != NULL);
	echo = messip_channel_connect(cnx, "alloc-echo", 2000);
	CU_ASSERT(echo != NULL);
	if (echo)
		CU_ASSERT(messip_send(echo, T_QUIT, NULL, 0, NULL, NULL, 0,
				      2000) == 0);
	messip_disconnect(cnx, 2000);
	CU_ASSERT(api_child_ok(srv, 5000));
	api_gate_close(&ready);
	api_stop_mgr();
}

static void test_lib_every_allocation_fails_shm(void)
{
	unsetenv("MESSIP_NO_SHM");
	lib_every_allocation_fails("same-host path");
}

static void test_lib_every_allocation_fails_tcp(void)
{
	setenv("MESSIP_NO_SHM", "1", 1);
	lib_every_allocation_fails("TCP path");
	unsetenv("MESSIP_NO_SHM");
}

static const struct mp_test_case tests[] = {
	{"codec: encode and decode allocate nothing",
	 test_codec_allocates_nothing},
	{"manager worker: every allocation of a session fails in turn",
	 test_mgr_worker_every_allocation_fails},
	{"library: every allocation of connect/create/send/receive/reply "
	 "fails in turn (same-host path)",
	 test_lib_every_allocation_fails_shm},
	{"library: every allocation of connect/create/send/receive/reply "
	 "fails in turn (TCP path)",
	 test_lib_every_allocation_fails_tcp},
	MP_TEST_END,
};

int main(void)
{
	mp_test_init("test_alloc", 120);
	return mp_test_main("alloc", tests);
}
