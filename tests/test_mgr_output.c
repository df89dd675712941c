/*
 * test_mgr_output — the manager's per-connection output limit
 * (max_conn_output, doc/messip-mgr.conf.5; issue 6 "bytes buffered per
 * connection"), on a worker played in-process by tests/mp_mgrloop (a real
 * segment, real sockets, the worker's own read/answer/flush code).
 *
 * Why in-process: a peer that never reads is first held back (past
 * MGR_OUT_HIGH the worker stops reading its requests), so the hard limit
 * is only crossed by one batch of answers larger than the gap between the
 * two.  Whether a batch lands there depends on how much the kernel took
 * off the output and how the requests were chunked - unknowable from
 * outside a real manager, so an end-to-end test would pass or hang by
 * chance.  Here the test sees the worker's pending output and the epoll
 * interest it asked for, and serves the connection only while the worker
 * would be told it is readable (as its epoll loop would).
 *
 * The scenario: a server creates a channel whose CH_INFO answer is large
 * (a 63-byte address, 107 bytes per answer); a "slow" client sends
 * CH_CONNECT requests to it (18 bytes each) and never reads.  Asserted:
 *   - below the limit the output grows, never past the limit, while the
 *     worker keeps reading (EPOLLIN wanted);
 *   - one 64 KiB batch of requests from there would need more than
 *     max_conn_output: the worker drops the connection (it does not buffer
 *     past the limit), counts an error, and the registration ends
 *     uncleanly (the channel's server gets its DISMISSED event);
 *   - another client on the same worker, and the server, are served
 *     before and after (PING answered), and a new client registers.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mgr_conn.h"
#include "mp_mgrloop.h"
#include "mp_mgrscript.h"
#include "mp_test.h"
#include "mp_wire.h"

#define LIMIT (512u * 1024) /* max_conn_output: its lowest allowed value */

struct mpeer {
	int fd;
	struct mgr_conn *c;
	uint8_t in[65536];
	size_t len;
};

static struct mp_mgrloop loop;
static uint32_t rq;

static void mpeer_open(struct mpeer *p)
{
	p->len = 0;
	p->fd = mp_mgrloop_connect(&loop, &p->c);
	CU_ASSERT_FATAL(p->fd >= 0);
}

/* Send m on p (a peer that reads: what the worker answers is drained
 * into p->in) and let the worker handle it. */
static void put(struct mpeer *p, const struct mp_wire_msg *m)
{
	uint8_t buf[MP_SCRIPT_FRAME_MAX];
	size_t n = mp_script_encode(m, buf);

	CU_ASSERT_FATAL(send(p->fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	CU_ASSERT_FATAL(mp_mgrloop_serve(&loop, p->c));
}

/* The next frame the worker sent p, with operation op (events of other
 * kinds are skipped unless op is MP_OP_EVENT).  1, or 0 if none came. */
static int expect(struct mpeer *p, unsigned op, struct mp_wire_msg *m)
{
	for (int tries = 0; tries < 20; tries++) {
		int n = mp_wire_decode(p->in, p->len, 65536, m);

		if (n > 0) {
			memmove(p->in, p->in + n, p->len - (size_t)n);
			p->len -= (size_t)n;
			if (m->op == op)
				return 1;
			tries = 0;
			continue;
		}
		CU_ASSERT_FATAL(n == 0);
		p->len += mp_mgrloop_drain(p->fd, p->in + p->len,
					   sizeof(p->in) - p->len);
		if (tries)
			mp_mgrloop_pass(&loop, 1);
	}
	return 0;
}

static int32_t hello(struct mpeer *p, const char *id)
{
	struct mp_wire_msg m = mp_script_msg(MP_OP_HELLO, ++rq), r;

	snprintf(m.id, sizeof(m.id), "%s", id);
	m.a = 1;
	put(p, &m);
	CU_ASSERT_FATAL(expect(p, MP_OP_WELCOME, &r));
	CU_ASSERT_FATAL(r.a == 0);
	return r.b; /* registration number */
}

static void ping_ok(struct mpeer *p)
{
	struct mp_wire_msg m = mp_script_msg(MP_OP_PING, ++rq), r;

	put(p, &m);
	CU_ASSERT(expect(p, MP_OP_PONG, &r) && r.reqid == m.reqid);
}

static uint64_t errors(void)
{
	return __atomic_load_n(&loop.st.workers[0].errors, __ATOMIC_RELAXED);
}

static void test_reader_cut_off_at_max_conn_output(void)
{
	static uint8_t batch[65536];
	struct mpeer srv, good, slow;
	struct mp_wire_msg m, r;
	uint8_t frame[MP_SCRIPT_FRAME_MAX];
	size_t flen, nbatch, per_answer, target, sent = 0;
	int32_t slow_regno;
	uint64_t err0;
	char name[64];
	int held_back = 0;

	mp_test_shm_name(name, sizeof(name), "out");
	CU_ASSERT_FATAL(mp_mgrloop_start(&loop, name) == 0);
	/* As the config file would set it (connections adopted from now on
	 * take it, as a worker's do after a reload). */
	loop.w.cfg.max_conn_output = LIMIT;

	mpeer_open(&srv);
	hello(&srv, "srv");
	m = mp_script_msg(MP_OP_CH_CREATE, ++rq);
	snprintf(m.name, sizeof(m.name), "b");
	memset(m.addr, 'a', MP_WIRE_ADDR_MAX);
	m.addr[MP_WIRE_ADDR_MAX] = '\0';
	m.a = 4;
	m.u = 42;
	put(&srv, &m);
	CU_ASSERT_FATAL(expect(&srv, MP_OP_RESULT, &r) && r.a == 0);

	mpeer_open(&good);
	hello(&good, "good");
	mpeer_open(&slow);
	slow_regno = hello(&slow, "slow");
	/* The kernel takes little of the output off the worker's hands, so
	 * what the worker buffers is what the test counts. */
	{
		int small = 4096;

		CU_ASSERT_FATAL(setsockopt(slow.c->fd, SOL_SOCKET, SO_SNDBUF,
					   &small, sizeof(small)) == 0);
	}

	m = mp_script_msg(MP_OP_CH_CONNECT, 0);
	snprintf(m.name, sizeof(m.name), "b");
	flen = mp_script_encode(&m, frame);
	{
		/* The size of one answer, to size the batches. */
		struct mp_wire_msg a = mp_script_msg(MP_OP_CH_INFO, 1);

		snprintf(a.name, sizeof(a.name), "b");
		snprintf(a.id, sizeof(a.id), "srv");
		memset(a.addr, 'a', MP_WIRE_ADDR_MAX);
		a.addr[MP_WIRE_ADDR_MAX] = '\0';
		per_answer = mp_wire_size(&a);
	}
	nbatch = sizeof(batch) / flen;
	for (size_t i = 0; i < nbatch; i++)
		memcpy(batch + i * flen, frame, flen);
	/* A full batch's answers go past the limit from `target` of output
	 * on, which is still under MGR_OUT_HIGH, where the worker reads. */
	target = LIMIT - nbatch * per_answer + 8192;
	CU_ASSERT_FATAL(nbatch * per_answer < LIMIT);
	CU_ASSERT_FATAL(target + 8192 < MGR_OUT_HIGH);

	/* Below the limit: a few requests at a time, never read. */
	while (mgr_conn_out_pending(slow.c) < target) {
		size_t n = 16 * flen;

		CU_ASSERT_FATAL(mp_mgrloop_alive(&loop, slow.c));
		CU_ASSERT_FATAL(slow.c->epoll_mask & EPOLLIN);
		CU_ASSERT_FATAL(send(slow.fd, batch, n, MSG_NOSIGNAL) ==
				(ssize_t)n);
		sent += n;
		CU_ASSERT_FATAL(mp_mgrloop_serve(&loop, slow.c));
		CU_ASSERT_FATAL(mgr_conn_out_pending(slow.c) <= LIMIT);
		CU_ASSERT_FATAL(sent < 4u * 1024 * 1024);
	}
	/* The others are served meanwhile. */
	ping_ok(&good);
	ping_ok(&srv);

	/* One big batch: its answers do not fit. */
	err0 = errors();
	CU_ASSERT_FATAL(slow.c->epoll_mask & EPOLLIN);
	CU_ASSERT_FATAL(send(slow.fd, batch, nbatch * flen, MSG_NOSIGNAL) ==
			(ssize_t)(nbatch * flen));
	if (mp_mgrloop_serve(&loop, slow.c)) {
		/* Not dropped: then it must be held back under the limit. */
		held_back = 1;
		CU_ASSERT(mgr_conn_out_pending(slow.c) <= LIMIT);
	}
	CU_ASSERT(!held_back);
	CU_ASSERT(!mp_mgrloop_alive(&loop, slow.c));
	CU_ASSERT(errors() == err0 + 1);
	fprintf(stderr, "slow reader: %zu bytes of requests before the batch "
		"of %zu; dropped past max_conn_output %u\n",
		sent, nbatch * flen, LIMIT);

	/* The registration ended uncleanly: the server hears DISMISSED. */
	mp_mgrloop_pass(&loop, 1);
	CU_ASSERT(expect(&srv, MP_OP_EVENT, &r));
	CU_ASSERT(r.a == -3 /* MESSIP_MSG_DISMISSED */);
	CU_ASSERT(r.c == slow_regno);

	/* Everyone else is still served; a newcomer registers. */
	ping_ok(&good);
	ping_ok(&srv);
	{
		struct mpeer late;

		mpeer_open(&late);
		hello(&late, "late");
		ping_ok(&late);
		mp_mgrloop_release(&loop, late.fd);
	}
	mp_mgrloop_release(&loop, slow.fd);
	mp_mgrloop_release(&loop, good.fd);
	mp_mgrloop_release(&loop, srv.fd);
	mp_mgrloop_stop(&loop);
}

static const struct mp_test_case tests[] = {
	{"reader that never reads is cut off at max_conn_output, others "
	 "served",
	 test_reader_cut_off_at_max_conn_output},
	MP_TEST_END,
};

int main(void)
{
	mp_test_init("test_mgr_output", 60);
	return mp_test_main("mgr_output", tests);
}
