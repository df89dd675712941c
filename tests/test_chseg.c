/*
 * test_chseg — a channel's segment (mp_chseg): the same-host fast path.
 *
 * Real processes (fork) on real segments (mp_shm, names from
 * mp_test_shm_name).  Covered:
 *   - round trips at 0, 1, 64, 1 KiB, 16 KiB and 64 KiB, replies by copy,
 *     by loaned buffer and by echoing the view; truncated replies;
 *   - zero copy: the loaned request buffer, the server's view and the
 *     reply view all lie in the segment, and the content goes through;
 *   - four clients at once, each reply matching its own request;
 *   - timeout: the client withdraws, the server is told (CANCELED), its
 *     late reply is refused (-ECANCELED), the slot is reused, and the
 *     next call gets its own reply; the three orders of the reply/cancel
 *     race, each with exactly one outcome;
 *   - a client SIGKILLed holding a slot (mid-write, request published,
 *     request held by the server): the server reclaims it and reports
 *     MP_CHSEG_GONE, on demand and by itself while it waits;
 *   - the server SIGKILLed while clients wait for a reply, for a free
 *     slot, and for room in the ring: all get -ESRCH within 1 s; a clean
 *     close does it at once; a server whose creating thread ended is
 *     still alive;
 *   - buffered messages through the embedded ring, in order, with
 *     back-pressure, and a corrupt record;
 *   - scribbles: an impossible state word, a length over the limit, a
 *     lying reply, a BUSY word the server never set, hiwater, header
 *     geometry, and random scribbles: -EBADMSG for that slot only, the
 *     others keep working, no crash (run it under ASan);
 *   - credentials, the doorbell (kick, deadline), open errors (-ENOENT,
 *     -EBADMSG, -EXDEV, -ESRCH), slot exhaustion and free-slot wake-up,
 *     and no /dev/shm object left.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_chseg.h"
#include "mp_futex.h"
#include "mp_test.h"
#include "mp_time.h"

/* Request types understood by the test server. */
enum {
	T_COPY = 1, /* reply: each byte + 1, from a private buffer */
	T_LOAN,	    /* reply: each byte + 2, written into the loaned buffer */
	T_ECHO,	    /* reply: the request view itself (no copy) */
	T_SLOW,	    /* as T_COPY after reqid milliseconds */
	T_HOLD,	    /* never reply; tell the parent through the hold pipe */
	T_CREDS,    /* reply: the credentials the server saw */
	T_PTRS,	    /* answer 1 if the view lies inside the segment */
	T_EXIT,	    /* reply, then exit */
};

struct creds {
	int32_t pid, uid, gid, cred;
	uint32_t sender;
	char id[MP_CHSEG_ID_LEN];
};

static char nbuf[MP_SHM_NAME_MAX];

static const char *new_name(void)
{
	return mp_test_shm_name(nbuf, sizeof(nbuf), "chseg");
}

static int shm_exists(const char *name)
{
	int fd = shm_open(name, O_RDONLY, 0);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

static void fill(uint8_t *p, uint32_t len, unsigned seed)
{
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

static int check(const uint8_t *p, uint32_t len, unsigned seed, int add)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)(seed + i * 7 + (i >> 8) + add))
			return 0;
	return 1;
}

static int in_seg(const mp_chseg_t *seg, const void *p, uint32_t len)
{
	const uint8_t *b = seg->shm.base, *x = p;

	return x >= b && x + len <= b + seg->shm.size;
}

/* ---- the test server ----------------------------------------------- */

static int hold_fd = -1; /* T_HOLD: one byte per request held */

static int serve_one(mp_chseg_t *seg, const struct mp_chseg_msg *m)
{
	static uint8_t buf[MP_CHSEG_MAX_MSG];
	const uint8_t *v = m->data;
	struct creds c;
	uint8_t *rb;
	uint32_t cap;
	char one = 1;

	switch (m->type) {
	case T_SLOW:
		usleep((useconds_t)m->reqid * 1000);
		/* fall through */
	case T_COPY:
		for (uint32_t i = 0; i < m->len; i++)
			buf[i] = (uint8_t)(v[i] + 1);
		return mp_chseg_reply(seg, m->ticket, (int32_t)m->len, buf,
				      m->len);
	case T_LOAN:
		rb = mp_chseg_reply_buf(seg, m->ticket, &cap);
		if (!rb || cap < m->len)
			return -EINVAL;
		for (uint32_t i = 0; i < m->len; i++)
			rb[i] = (uint8_t)(v[i] + 2);
		return mp_chseg_reply(seg, m->ticket, (int32_t)m->len, rb,
				      m->len);
	case T_ECHO:
		return mp_chseg_reply(seg, m->ticket, (int32_t)m->len, m->data,
				      m->len);
	case T_HOLD:
		if (hold_fd >= 0 && write(hold_fd, &one, 1) != 1)
			return -EIO;
		return 0;
	case T_CREDS:
		memset(&c, 0, sizeof(c));
		c.pid = m->pid;
		c.uid = (int32_t)m->uid;
		c.gid = (int32_t)m->gid;
		c.cred = m->cred;
		c.sender = m->sender;
		memcpy(c.id, m->id, sizeof(c.id));
		return mp_chseg_reply(seg, m->ticket, 0, &c, sizeof(c));
	case T_PTRS:
		return mp_chseg_reply(seg, m->ticket,
				      in_seg(seg, m->data, m->len) &&
					      m->data != NULL,
				      NULL, 0);
	case T_EXIT:
		mp_chseg_reply(seg, m->ticket, 0, NULL, 0);
		return 1;
	default:
		return mp_chseg_reply(seg, m->ticket, -1, NULL, 0);
	}
}

/* Serve until a T_EXIT request or deadline; buffered messages are left
 * in the ring.  0 on a clean exit. */
static int serve_loop(mp_chseg_t *seg, int64_t deadline)
{
	struct mp_chseg_msg m;
	int rc, idle = 0;

	for (;;) {
		rc = mp_chseg_next(seg, &m);
		if (rc == 1 && m.kind == MP_CHSEG_REQUEST) {
			idle = 0;
			if (serve_one(seg, &m) == 1)
				return 0;
			continue;
		}
		if (rc != 0)
			continue; /* events, corrupt slots: carry on */
		if (mp_time_now_ns() >= deadline)
			return -ETIMEDOUT;
		/* Buffered messages are left queued (a test fills the
		 * ring), which keeps the wait returning: back off. */
		if (++idle > 3)
			usleep(1000);
		mp_chseg_server_wait(seg, deadline);
	}
}

/* Fork a server child that creates `name` with cfg and serves for up to
 * 50 s.  Returns its pid once the segment exists. */
static pid_t start_server(const char *name, const struct mp_chseg_cfg *cfg,
			  int hold_wfd)
{
	int p[2], rc = -1;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = mp_test_fork();
	if (pid == 0) {
		mp_chseg_t seg;

		close(p[0]);
		hold_fd = hold_wfd;
		rc = mp_chseg_create(&seg, name, cfg);
		if (write(p[1], &rc, sizeof(rc)) != sizeof(rc) || rc)
			_exit(2);
		rc = serve_loop(&seg, mp_time_deadline(50000));
		mp_chseg_close(&seg);
		_exit(rc ? 3 : 0);
	}
	close(p[1]);
	if (pid < 0 || read(p[0], &rc, sizeof(rc)) != sizeof(rc) || rc) {
		close(p[0]);
		return -1;
	}
	close(p[0]);
	return pid;
}

static int stop_server(mp_chseg_t *cl, pid_t pid)
{
	int32_t ans;
	int st;

	mp_chseg_call(cl, T_EXIT, NULL, 0, &ans, NULL, 0,
		      mp_time_deadline(5000));
	st = mp_test_wait(pid, 5000);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Wait for a child's exit status (-1 if it did not end in time). */
static int child_status(pid_t pid, int ms)
{
	int st = mp_test_wait(pid, ms);

	if (st == -1) {
		mp_test_kill(pid);
		return -1;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- round trips ------------------------------------------------------ */

static const uint32_t sizes[] = {0, 1, 64, 1024, 16384, 65536};

static void test_round_trip_sizes(void)
{
	static uint8_t req[MP_CHSEG_MAX_MSG], rep[MP_CHSEG_MAX_MSG];
	const char *name = new_name();
	mp_chseg_t cl;
	int32_t ans;
	pid_t srv;
	int rc;

	srv = start_server(name, NULL, -1);
	CU_ASSERT_FATAL(srv > 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint32_t len = sizes[k];
		int types[] = {T_COPY, T_LOAN, T_ECHO};
		int adds[] = {1, 2, 0};

		for (int t = 0; t < 3; t++) {
			fill(req, len, (unsigned)(k * 3 + t));
			memset(rep, 0xee, sizeof(rep));
			ans = -77;
			rc = mp_chseg_call(&cl, types[t], req, len, &ans, rep,
					   sizeof(rep), mp_time_deadline(5000));
			CU_ASSERT_EQUAL(rc, (int)len);
			CU_ASSERT_EQUAL(ans, (int32_t)len);
			CU_ASSERT(check(rep, len, (unsigned)(k * 3 + t),
					adds[t]));
		}
	}
	/* A reply longer than the buffer: truncated copy, full length. */
	fill(req, 1000, 9);
	memset(rep, 0, sizeof(rep));
	rc = mp_chseg_call(&cl, T_COPY, req, 1000, &ans, rep, 10,
			   mp_time_deadline(5000));
	CU_ASSERT_EQUAL(rc, 1000);
	CU_ASSERT(check(rep, 10, 9, 1));
	CU_ASSERT_EQUAL(rep[10], 0);
	/* Too long to send. */
	CU_ASSERT_EQUAL(mp_chseg_call(&cl, T_COPY, req, MP_CHSEG_MAX_MSG + 1,
				      &ans, rep, 0, mp_time_deadline(1000)),
			-EMSGSIZE);
	CU_ASSERT_EQUAL(stop_server(&cl, srv), 0);
	mp_chseg_close(&cl);
	CU_ASSERT(!shm_exists(name));
}

static void test_zero_copy(void)
{
	const char *name = new_name();
	struct mp_chseg_req r;
	mp_chseg_t cl;
	pid_t srv;

	srv = start_server(name, NULL, -1);
	CU_ASSERT_FATAL(srv > 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint32_t len = sizes[k];

		CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, MP_TIME_FOREVER) == 0);
		CU_ASSERT(r.cap == MP_CHSEG_MAX_MSG);
		CU_ASSERT(in_seg(&cl, r.buf, r.cap));
		fill(r.buf, len, (unsigned)k + 40);
		CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_LOAN, k, len) == 0);
		CU_ASSERT_FATAL(
			mp_chseg_wait(&cl, &r, mp_time_deadline(5000)) == 0);
		CU_ASSERT_EQUAL(r.rlen, len);
		CU_ASSERT_EQUAL(r.answer, (int32_t)len);
		CU_ASSERT(in_seg(&cl, r.rdata, r.rlen));
		if (len)
			CU_ASSERT(r.rdata != r.buf); /* the loaned area */
		CU_ASSERT(check(r.rdata, len, (unsigned)k + 40, 2));
		mp_chseg_done(&cl, &r);

		/* Echo of the view: the reply is the request, in place. */
		CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, MP_TIME_FOREVER) == 0);
		fill(r.buf, len, (unsigned)k + 50);
		CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_ECHO, k, len) == 0);
		CU_ASSERT_FATAL(
			mp_chseg_wait(&cl, &r, mp_time_deadline(5000)) == 0);
		CU_ASSERT(r.rdata == r.buf);
		CU_ASSERT(check(r.rdata, len, (unsigned)k + 50, 0));
		mp_chseg_done(&cl, &r);
	}
	/* The server's view of the request lies in the segment too. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, MP_TIME_FOREVER) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_PTRS, 0, 100) == 0);
	CU_ASSERT_FATAL(mp_chseg_wait(&cl, &r, mp_time_deadline(5000)) == 0);
	CU_ASSERT_EQUAL(r.answer, 1);
	mp_chseg_done(&cl, &r);
	/* Misuse: send without a loan, a length over the capacity. */
	CU_ASSERT_EQUAL(mp_chseg_send(&cl, &r, T_COPY, 0, 1), -EINVAL);
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, MP_TIME_FOREVER) == 0);
	CU_ASSERT_EQUAL(mp_chseg_send(&cl, &r, T_COPY, 0, r.cap + 1),
			-EMSGSIZE);
	mp_chseg_done(&cl, &r); /* abandon the loan */
	CU_ASSERT_EQUAL(stop_server(&cl, srv), 0);
	mp_chseg_close(&cl);
}

/* ---- several clients ---------------------------------------------------- */

static int client_run(const char *name, unsigned me, int n)
{
	static uint8_t req[8192], rep[8192];
	mp_chseg_t cl;
	int32_t ans;
	int rc;

	if (mp_chseg_open(&cl, name))
		return 10;
	mp_chseg_set_identity(&cl, me, "client");
	for (int i = 0; i < n; i++) {
		uint32_t len = 8 + (mp_test_rand() % 4000);
		int type = i % 2 ? T_COPY : T_LOAN;

		/* Who and which: the reply must be a transform of this. */
		fill(req, len, me * 1000 + (unsigned)i);
		memcpy(req, &me, sizeof(me));
		memcpy(req + 4, &i, sizeof(i));
		rc = mp_chseg_call(&cl, type, req, len, &ans, rep, sizeof(rep),
				   mp_time_deadline(10000));
		if (rc != (int)len || ans != (int32_t)len)
			return 11;
		for (uint32_t j = 0; j < len; j++)
			if (rep[j] !=
			    (uint8_t)(req[j] + (type == T_COPY ? 1 : 2)))
				return 12;
	}
	mp_chseg_close(&cl);
	return 0;
}

static void test_many_clients(void)
{
	const char *name = new_name();
	struct mp_chseg_cfg cfg = {.nslots = 8};
	pid_t srv, c[4];
	mp_chseg_t cl;

	srv = start_server(name, &cfg, -1);
	CU_ASSERT_FATAL(srv > 0);
	for (unsigned i = 0; i < 4; i++) {
		c[i] = mp_test_fork();
		if (c[i] == 0)
			_exit(client_run(name, i + 1, 3000));
	}
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(child_status(c[i], 30000), 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	CU_ASSERT_EQUAL(stop_server(&cl, srv), 0);
	mp_chseg_close(&cl);
}

/* ---- timeouts and withdrawn requests ----------------------------------- */

/* Server and client handles in one process: each step in a known order. */
static int pair_open(mp_chseg_t *srv, mp_chseg_t *cl,
		     const struct mp_chseg_cfg *cfg)
{
	const char *name = new_name();
	int rc = mp_chseg_create(srv, name, cfg);

	if (rc)
		return rc;
	rc = mp_chseg_open(cl, name);
	if (rc)
		mp_chseg_close(srv);
	return rc;
}

static void pair_close(mp_chseg_t *srv, mp_chseg_t *cl)
{
	char name[MP_SHM_NAME_MAX];

	memcpy(name, srv->shm.name, sizeof(name));
	mp_chseg_close(cl);
	mp_chseg_close(srv);
	CU_ASSERT(!shm_exists(name));
}

static uint32_t slot_state(mp_chseg_t *seg, uint32_t i)
{
	struct mp_chseg_slot *s =
		(struct mp_chseg_slot *)(seg->slots + (size_t)i * seg->block);

	return __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
}

static struct mp_chseg_slot *ctl(mp_chseg_t *seg, uint32_t i)
{
	return (struct mp_chseg_slot *)(seg->slots + (size_t)i * seg->block);
}

static void test_cancel_races(void)
{
	mp_chseg_t srv, cl;
	struct mp_chseg_req r;
	struct mp_chseg_msg m;

	CU_ASSERT_FATAL(pair_open(&srv, &cl, NULL) == 0);

	/* 1. Withdrawn before the server took it: silently reclaimed. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 1, 3) == 0);
	CU_ASSERT_EQUAL(mp_chseg_wait(&cl, &r, 0), -ETIMEDOUT);
	CU_ASSERT_EQUAL(mp_chseg_cancel(&cl, &r), 0);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), 0);
	CU_ASSERT_EQUAL(slot_state(&srv, r.slot) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_FREE);

	/* 2. Withdrawn while held: CANCELED reported, the slot kept until
	 * the reply, which is refused; then the slot is free again. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	memcpy(r.buf, "abc", 3);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 2, 3) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	CU_ASSERT_EQUAL(m.kind, MP_CHSEG_REQUEST);
	CU_ASSERT_EQUAL(m.reqid, 2);
	CU_ASSERT_EQUAL(m.len, 3);
	CU_ASSERT(memcmp(m.data, "abc", 3) == 0);
	CU_ASSERT_EQUAL(mp_chseg_cancel(&cl, &r), 0);
	{
		struct mp_chseg_msg c;

		CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &c), 1);
		CU_ASSERT_EQUAL(c.kind, MP_CHSEG_CANCELED);
		CU_ASSERT_EQUAL(c.slot, m.slot);
		CU_ASSERT_EQUAL(c.ticket, m.ticket);
		CU_ASSERT_EQUAL(c.pid, getpid());
		/* Reported once; the view is still there. */
		CU_ASSERT_EQUAL(mp_chseg_next(&srv, &c), 0);
		CU_ASSERT(memcmp(m.data, "abc", 3) == 0);
	}
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 5, "x", 1), -ECANCELED);
	CU_ASSERT_EQUAL(slot_state(&srv, m.slot) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_FREE);
	/* A second reply to the same ticket: it names nothing any more. */
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 5, "x", 1), -EINVAL);
	/* The slot is reused, under a new ticket. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	CU_ASSERT_EQUAL(r.slot, m.slot);
	CU_ASSERT_NOT_EQUAL(r.gen, (uint32_t)(m.ticket >> 32));
	mp_chseg_done(&cl, &r);

	/* 3. Withdrawn while held, reply before the server scans again:
	 * -ECANCELED from the reply, no CANCELED event. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 3, 0) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	CU_ASSERT_EQUAL(mp_chseg_cancel(&cl, &r), 0);
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 5, NULL, 0), -ECANCELED);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), 0);

	/* 4. The reply wins: cancel returns 1 with the reply. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 4, 0) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 44, "hello", 5), 0);
	CU_ASSERT_EQUAL(mp_chseg_cancel(&cl, &r), 1);
	CU_ASSERT_EQUAL(r.answer, 44);
	CU_ASSERT_EQUAL(r.rlen, 5);
	CU_ASSERT(memcmp(r.rdata, "hello", 5) == 0);
	mp_chseg_done(&cl, &r);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), 0);

	/* Misuse on the server side. */
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, 999, 0, NULL, 0), -EINVAL);
	CU_ASSERT_PTR_NULL(mp_chseg_reply_buf(&srv, m.ticket, NULL));
	pair_close(&srv, &cl);
}

static void test_timeout_late_reply(void)
{
	const char *name = new_name();
	struct mp_chseg_msg m, c;
	int64_t t0, dl;
	mp_chseg_t srv;
	pid_t pid;
	int rc, seen_cancel = 0, served = 0;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		uint8_t req[100], rep[100];
		mp_chseg_t cl;
		int32_t ans;
		int64_t s;

		if (mp_chseg_open(&cl, name))
			_exit(10);
		fill(req, 100, 1);
		s = mp_time_now_ns();
		rc = mp_chseg_call(&cl, T_SLOW, req, 100, &ans, rep, 100,
				   mp_time_deadline(100));
		if (rc != -ETIMEDOUT)
			_exit(11);
		s = mp_time_now_ns() - s;
		if (s < 90000000 || s > 1000000000)
			_exit(12);
		/* The next call gets its own reply, not the late one. */
		fill(req, 100, 2);
		rc = mp_chseg_call(&cl, T_COPY, req, 100, &ans, rep, 100,
				   mp_time_deadline(5000));
		if (rc != 100 || !check(rep, 100, 2, 1))
			_exit(13);
		mp_chseg_close(&cl);
		_exit(0);
	}
	CU_ASSERT_FATAL(pid > 0);
	/* Take the slow request and sit on it until the client withdraws. */
	dl = mp_time_deadline(5000);
	do {
		rc = mp_chseg_next(&srv, &m);
		if (!rc)
			mp_chseg_server_wait(&srv, dl);
	} while (rc == 0 && mp_time_now_ns() < dl);
	CU_ASSERT_EQUAL_FATAL(rc, 1);
	CU_ASSERT_EQUAL(m.kind, MP_CHSEG_REQUEST);
	CU_ASSERT_EQUAL(m.type, T_SLOW);
	/* The withdrawal and the client's next request arrive in either
	 * order. */
	t0 = mp_time_now_ns();
	while (mp_time_now_ns() < dl && (!seen_cancel || !served)) {
		rc = mp_chseg_next(&srv, &c);
		if (rc == 0) {
			mp_chseg_server_wait(&srv, dl);
			continue;
		}
		CU_ASSERT_EQUAL_FATAL(rc, 1);
		if (c.kind == MP_CHSEG_CANCELED) {
			CU_ASSERT_EQUAL(c.ticket, m.ticket);
			CU_ASSERT(mp_time_now_ns() - t0 < 1000000000);
			/* The late reply is refused, the slot reclaimed. */
			CU_ASSERT_EQUAL(
				mp_chseg_reply(&srv, m.ticket, 0, "late", 4),
				-ECANCELED);
			CU_ASSERT_EQUAL(slot_state(&srv, m.slot) &
						MP_CHSEG_ST_MASK,
					MP_CHSEG_ST_FREE);
			seen_cancel++;
		} else {
			CU_ASSERT_EQUAL(c.kind, MP_CHSEG_REQUEST);
			CU_ASSERT_EQUAL(c.type, T_COPY);
			CU_ASSERT_NOT_EQUAL(c.ticket, m.ticket);
			CU_ASSERT_EQUAL(serve_one(&srv, &c), 0);
			served++;
		}
	}
	CU_ASSERT_EQUAL(seen_cancel, 1);
	CU_ASSERT_EQUAL(served, 1);
	CU_ASSERT_EQUAL(child_status(pid, 5000), 0);
	mp_chseg_close(&srv);
}

/* Many requests with deadlines of a few dozen microseconds, replies after
 * random delays of the same order: every request must end one way for
 * both sides.  Client: reply (1) or withdrawn (2).  Server: reply
 * delivered (1), refused with -ECANCELED (2), or never seen (0: withdrawn
 * before it was taken).  So client 1 <=> server 1. */
#define RACE_N 3000

static void busy_us(unsigned us)
{
	int64_t end = mp_time_now_ns() + (int64_t)us * 1000;

	while (mp_time_now_ns() < end)
		;
}

static void test_cancel_reply_race_stress(void)
{
	const char *name = new_name();
	struct mp_chseg_msg m;
	uint8_t *cli, *srvo;
	uint32_t *done;
	mp_chseg_t srv;
	int64_t dl;
	pid_t pid;
	int n1 = 0, n2 = 0, mism = 0, rc;

	cli = mmap(NULL, 2 * RACE_N + 64, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(cli != MAP_FAILED);
	srvo = cli + RACE_N;
	done = (uint32_t *)(cli + 2 * RACE_N);
	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		struct mp_chseg_req r;
		mp_chseg_t cl;
		unsigned x = (unsigned)getpid();

		if (mp_chseg_open(&cl, name))
			_exit(10);
		for (uint32_t i = 0; i < RACE_N; i++) {
			uint32_t got;

			x = x * 1103515245u + 12345u;
			if (mp_chseg_loan(&cl, &r, mp_time_deadline(5000)))
				_exit(11);
			memcpy(r.buf, &i, 4);
			if (mp_chseg_send(&cl, &r, T_COPY, i, 4))
				_exit(12);
			rc = mp_chseg_wait(&cl, &r,
					   mp_time_now_ns() +
						   (int64_t)((x >> 8) % 60) *
							   1000);
			if (rc == -ETIMEDOUT) {
				rc = mp_chseg_cancel(&cl, &r);
				if (rc == 0) {
					cli[i] = 2;
					continue;
				}
				if (rc != 1)
					_exit(13);
			} else if (rc) {
				_exit(14);
			}
			memcpy(&got, r.rdata, 4);
			if (r.rlen != 4 || got != i + 1)
				_exit(15); /* someone else's reply */
			cli[i] = 1;
			mp_chseg_done(&cl, &r);
		}
		__atomic_store_n(done, 1, __ATOMIC_RELEASE);
		mp_chseg_kick(&cl);
		mp_chseg_close(&cl);
		_exit(0);
	}
	dl = mp_time_deadline(40000);
	for (;;) {
		rc = mp_chseg_next(&srv, &m);
		if (rc == 1 && m.kind == MP_CHSEG_REQUEST) {
			uint32_t v = (uint32_t)m.reqid + 1;

			CU_ASSERT_FATAL(m.reqid < RACE_N);
			busy_us(mp_test_rand() % 60);
			rc = mp_chseg_reply(&srv, m.ticket, 0, &v, 4);
			CU_ASSERT(rc == 0 || rc == -ECANCELED);
			srvo[m.reqid] = rc == 0 ? 1 : 2;
			continue;
		}
		if (rc == 1)
			continue; /* CANCELED events: the reply says it too */
		CU_ASSERT_EQUAL_FATAL(rc, 0);
		if (__atomic_load_n(done, __ATOMIC_ACQUIRE) ||
		    mp_time_now_ns() > dl)
			break;
		mp_chseg_server_wait(&srv, mp_time_deadline(100));
	}
	CU_ASSERT_EQUAL(child_status(pid, 5000), 0);
	for (int i = 0; i < RACE_N; i++) {
		if (cli[i] == 1)
			n1++;
		else if (cli[i] == 2)
			n2++;
		if ((cli[i] == 1) != (srvo[i] == 1) || !cli[i])
			mism++;
	}
	CU_ASSERT_EQUAL(mism, 0);
	CU_ASSERT_EQUAL(n1 + n2, RACE_N);
	CU_ASSERT(n1 > 0);
	CU_ASSERT(n2 > 0); /* both outcomes happened */
	fprintf(stderr, "[race: %d replied, %d withdrawn] ", n1, n2);
	munmap(cli, 2 * RACE_N + 64);
	mp_chseg_close(&srv);
}

/* ---- a client dies holding a slot ------------------------------------ */

/* Parent side of a forked child's "ready" byte on pipe fd rfd (the write
 * end already closed): pid once the byte came, -1 if it did not. */
static pid_t child_ready(pid_t pid, int rfd)
{
	char b;
	int ok = pid > 0 && read(rfd, &b, 1) == 1;

	close(rfd);
	return ok ? pid : -1;
}

/* Child: open, loan, optionally write and send, then tell the parent
 * (one byte) and sleep until killed. */
static pid_t doomed_client(const char *name, int send, int wait)
{
	int p[2];
	char b = 0;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = mp_test_fork();
	if (pid == 0) {
		struct mp_chseg_req r;
		mp_chseg_t cl;

		close(p[0]);
		if (mp_chseg_open(&cl, name) || mp_chseg_loan(&cl, &r, 0))
			_exit(10);
		memset(r.buf, 'q', 10);
		if (send && mp_chseg_send(&cl, &r, T_COPY, 7, 10))
			_exit(11);
		if (write(p[1], &b, 1) != 1)
			_exit(12);
		if (wait)
			mp_chseg_wait(&cl, &r, MP_TIME_FOREVER);
		pause();
		_exit(0);
	}
	close(p[1]);
	return child_ready(pid, p[0]);
}

static void test_client_killed(void)
{
	const char *name = new_name();
	struct mp_chseg_msg m, g;
	mp_chseg_t srv;
	pid_t pid;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);

	/* Mid-write (CLAIMED): reaped on demand. */
	pid = doomed_client(name, 0, 0);
	CU_ASSERT_FATAL(pid > 0);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0); /* alive: left alone */
	mp_test_kill(pid);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 1);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &g), 1);
	CU_ASSERT_EQUAL(g.kind, MP_CHSEG_GONE);
	CU_ASSERT_EQUAL(g.pid, pid);
	CU_ASSERT_EQUAL(slot_state(&srv, g.slot) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_FREE);

	/* Published, not yet taken (REQ). */
	pid = doomed_client(name, 1, 0);
	CU_ASSERT_FATAL(pid > 0);
	mp_test_kill(pid);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 1);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &g), 1);
	CU_ASSERT_EQUAL(g.kind, MP_CHSEG_GONE);
	CU_ASSERT_EQUAL(g.pid, pid);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &g), 0); /* nothing to take */

	/* Held by the server while the client sleeps for the reply; found
	 * by the server's own wait (reap_ns shortened), not on demand. */
	srv.reap_ns = 50000000;
	pid = doomed_client(name, 1, 1);
	CU_ASSERT_FATAL(pid > 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	CU_ASSERT_EQUAL(m.kind, MP_CHSEG_REQUEST);
	CU_ASSERT_EQUAL(m.pid, pid);
	usleep(20000); /* let it fall asleep */
	mp_test_kill(pid);
	{
		int64_t t0 = mp_time_now_ns(), dl = mp_time_deadline(3000);
		int rc = 0;

		while (rc == 0 && mp_time_now_ns() < dl) {
			rc = mp_chseg_next(&srv, &g);
			if (rc == 0)
				mp_chseg_server_wait(&srv, dl);
		}
		CU_ASSERT_EQUAL_FATAL(rc, 1);
		CU_ASSERT_EQUAL(g.kind, MP_CHSEG_GONE);
		CU_ASSERT_EQUAL(g.pid, pid);
		CU_ASSERT_EQUAL(g.ticket, m.ticket);
		CU_ASSERT(mp_time_now_ns() - t0 < 1000000000);
	}
	/* The view stays until the reply, which reports the death and frees
	 * the slot. */
	CU_ASSERT(memcmp(m.data, "qqqqqqqqqq", 10) == 0);
	CU_ASSERT_PTR_NULL(mp_chseg_reply_buf(&srv, m.ticket, NULL));
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 0, "r", 1), -ESRCH);
	CU_ASSERT_EQUAL(slot_state(&srv, m.slot) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_FREE);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);
	mp_chseg_close(&srv);
	CU_ASSERT(!shm_exists(name));
}

/* ---- the reaper and live clients (issue 5) --------------------------- */

/*
 * A live client shows pid 0 in its slot twice without its state word
 * moving: between its claim and its pid store, and in mp_chseg_done
 * between clearing its pid and storing FREE.  The reaper must leave the
 * slot alone then: reclaiming it freed a live client's slot under it
 * (its own FREE store then put an older generation back over the
 * server's, and a new claimer's publish failed with -EBADMSG: the
 * test_fault_race failure under TSan).  Here the client is stopped, by
 * hand, right after each of those first stores.
 */
static void test_reap_spares_pid0(void)
{
	const char *name = new_name();
	struct mp_chseg_msg m, g;
	struct mp_chseg_req r;
	mp_chseg_t srv, cl;
	uint32_t w, s0;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	srv.reap_ns = 1; /* the periodic check too: every slot is due */

	/* Claimed, pid not stored yet. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	__atomic_store_n(&ctl(&srv, r.slot)->pid, 0, __ATOMIC_RELAXED);
	w = slot_state(&srv, r.slot);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 0);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 0);
	CU_ASSERT_EQUAL(slot_state(&srv, r.slot), w);
	__atomic_store_n(&ctl(&srv, r.slot)->pid, (uint32_t)getpid(),
			 __ATOMIC_RELAXED);

	/* A round trip up to the reply, then the client is stopped inside
	 * mp_chseg_done: pid cleared, the slot still REPLIED. */
	memcpy(r.buf, "abcd", 4);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 1, 4) == 0);
	CU_ASSERT_FATAL(mp_chseg_next(&srv, &m) == 1);
	CU_ASSERT_FATAL(m.kind == MP_CHSEG_REQUEST);
	CU_ASSERT_EQUAL(m.pid, getpid());
	CU_ASSERT_EQUAL(serve_one(&srv, &m), 0);
	CU_ASSERT_FATAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)) == 0);
	__atomic_store_n(&ctl(&srv, r.slot)->pid, 0, __ATOMIC_RELAXED);
	w = slot_state(&srv, r.slot);
	CU_ASSERT_EQUAL(w & MP_CHSEG_ST_MASK, MP_CHSEG_ST_REPLIED);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 0);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 0);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &g), 0); /* no GONE event */
	/* Untouched: the client's reply is still there, and its own FREE
	 * store follows the word it holds. */
	CU_ASSERT_EQUAL(slot_state(&srv, r.slot), w);
	CU_ASSERT_EQUAL(r.rlen, 4);
	CU_ASSERT(memcmp(r.rdata, "bcde", 4) == 0);
	/* The client parks the slot as it is (its pid back, as a real
	 * client's slot shows it: mp_chseg_done stores nothing there). */
	__atomic_store_n(&ctl(&srv, r.slot)->pid, (uint32_t)getpid(),
			 __ATOMIC_RELAXED);
	s0 = r.slot;
	mp_chseg_done(&cl, &r);
	CU_ASSERT_EQUAL(slot_state(&srv, s0), w);
	/* And the slot works on: the next loan re-uses it. */
	CU_ASSERT_EQUAL(mp_chseg_loan(&cl, &r, 0), 0);
	CU_ASSERT_EQUAL(r.slot, s0);
	CU_ASSERT_EQUAL(r.gen, (w >> MP_CHSEG_GEN_SHIFT) + 1);
	mp_chseg_done(&cl, &r);
	mp_chseg_close(&cl);
	mp_chseg_close(&srv);
	CU_ASSERT(!shm_exists(name));
}

/*
 * The same race at full speed: client processes make round trips as fast
 * as they can while the server reaps every slot (force) after each
 * request and whenever idle.  No live client may be taken for dead (no
 * GONE event), and every call must get its own reply (a slot reclaimed
 * under its client fails it with -EBADMSG).
 */
#define REAP_RACE_PROCS 3
#define REAP_RACE_CALLS 4000

static void test_reap_race_stress(void)
{
	const char *name = new_name();
	struct mp_chseg_msg m;
	pid_t pid[REAP_RACE_PROCS];
	uint32_t *left;
	mp_chseg_t srv;
	long served = 0, gone = 0, reaps = 0, idle = 0;
	int64_t dl;
	int rc;

	left = mmap(NULL, sizeof(*left), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(left != MAP_FAILED);
	*left = REAP_RACE_PROCS;
	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);
	for (int p = 0; p < REAP_RACE_PROCS; p++) {
		pid[p] = mp_test_fork();
		if (pid[p] == 0) {
			uint8_t req[64], rep[64];
			mp_chseg_t cl;
			int32_t ans;
			int code = 0;

			if (mp_chseg_open(&cl, name))
				_exit(10);
			for (uint32_t i = 0; i < REAP_RACE_CALLS && !code;
			     i++) {
				uint32_t len = 1 + i % 64;

				fill(req, len, i + (uint32_t)p);
				rc = mp_chseg_call(&cl, T_COPY, req, len, &ans,
						   rep, sizeof(rep),
						   mp_time_deadline(10000));
				if (rc == -EBADMSG)
					code = 11; /* reclaimed under us */
				else if (rc != (int)len || ans != (int)len ||
					 !check(rep, len, i + (uint32_t)p, 1))
					code = 12;
			}
			__atomic_sub_fetch(left, 1, __ATOMIC_SEQ_CST);
			mp_chseg_kick(&cl);
			mp_chseg_close(&cl);
			_exit(code);
		}
		CU_ASSERT_FATAL(pid[p] > 0);
	}
	dl = mp_time_deadline(60000);
	while (__atomic_load_n(left, __ATOMIC_SEQ_CST) &&
	       mp_time_now_ns() < dl) {
		rc = mp_chseg_next(&srv, &m);
		if (rc == 1 && m.kind == MP_CHSEG_REQUEST) {
			CU_ASSERT(serve_one(&srv, &m) == 0);
			served++;
		} else if (rc == 0 && ++idle % 64 == 0) {
			/* Mostly reap while idle: the window is a client's
			 * mp_chseg_done, just after a reply. */
			mp_chseg_server_wait(&srv, mp_time_deadline(10));
		}
		gone += mp_chseg_reap(&srv, 1);
		reaps++;
	}
	for (int p = 0; p < REAP_RACE_PROCS; p++)
		CU_ASSERT_EQUAL(child_status(pid[p], 5000), 0);
	fprintf(stderr, "[%ld served, %ld forced reaps, %ld gone] ", served,
		reaps, gone);
	CU_ASSERT_EQUAL(gone, 0);
	CU_ASSERT_EQUAL(served, (long)REAP_RACE_PROCS * REAP_RACE_CALLS);
	munmap(left, sizeof(*left));
	mp_chseg_close(&srv);
	CU_ASSERT(!shm_exists(name));
}

/* ---- the server dies ------------------------------------------------- */

/* Child: a client that blocks (what: 0 reply, 1 free slot, 2 ring room)
 * and exits 0 if it then got -ESRCH, reporting how long after `go`
 * (the parent's kill time) through the exit code is not possible: the
 * parent times it instead.  live_ns: its liveness slice (0: default). */
static pid_t blocked_client(const char *name, int what, int64_t live_ns)
{
	pid_t pid = mp_test_fork();

	if (pid == 0) {
		struct mp_chseg_req r;
		mp_chseg_t cl;
		int rc;

		if (mp_chseg_open(&cl, name))
			_exit(10);
		if (live_ns)
			cl.live_ns = live_ns;
		switch (what) {
		case 0:
			rc = mp_chseg_call(&cl, T_HOLD, "x", 1, NULL, NULL, 0,
					   mp_time_deadline(20000));
			break;
		case 1:
			rc = mp_chseg_loan(&cl, &r, mp_time_deadline(20000));
			break;
		default:
			/* Through the ring, full already; or through a lane
			 * of its own, which the first fills. */
			rc = mp_chseg_bsend(&cl, 1, "y", 1,
					    mp_time_deadline(20000));
			if (rc >= 0)
				rc = mp_chseg_bsend(&cl, 1, "y", 1,
						    mp_time_deadline(20000));
			break;
		}
		_exit(rc == -ESRCH ? 0 : 20 + what);
	}
	return pid;
}

static void test_server_killed(void)
{
	const char *name = new_name();
	struct mp_chseg_cfg cfg = {
		.nslots = 2, .max_msg = 4096, .ring_records = 1};
	int hp[2];
	pid_t srv, c[4];
	mp_chseg_t cl;
	int64_t t0;
	char b;

	CU_ASSERT_FATAL(pipe(hp) == 0);
	srv = start_server(name, &cfg, hp[1]);
	CU_ASSERT_FATAL(srv > 0);
	close(hp[1]);
	/* Fill the ring (one record) so that a buffered send must wait. */
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl, 1, "z", 1, 0), 0);
	/* Two clients wait for replies the server holds (both slots)... */
	c[0] = blocked_client(name, 0, 0);
	c[1] = blocked_client(name, 0, 0);
	CU_ASSERT_EQUAL(read(hp[0], &b, 1), 1);
	CU_ASSERT_EQUAL(read(hp[0], &b, 1), 1);
	/* ... one for a free slot, one for room in the ring. */
	c[2] = blocked_client(name, 1, 0);
	c[3] = blocked_client(name, 2, 0);
	usleep(300000); /* past the spin and yield phases: asleep */
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(mp_test_wait(c[i], 0), -1); /* still blocked */
	t0 = mp_time_now_ns();
	mp_test_kill(srv);
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(child_status(c[i], 2000), 0);
	CU_ASSERT(mp_time_now_ns() - t0 < 1000000000);
	/* A client that comes later learns it at once. */
	CU_ASSERT_EQUAL(mp_chseg_call(&cl, T_COPY, "a", 1, NULL, NULL, 0,
				      mp_time_deadline(5000)),
			-ESRCH);
	CU_ASSERT_FALSE(mp_chseg_server_alive(&cl));
	mp_chseg_close(&cl);
	{
		mp_chseg_t late;

		CU_ASSERT_EQUAL(mp_chseg_open(&late, name), -ESRCH);
	}
	close(hp[0]);
	/* Nobody unlinks for a killed server: the test does. */
	CU_ASSERT_EQUAL(mp_shm_unlink(name), 0);
}

static void test_server_closes(void)
{
	const char *name = new_name();
	mp_chseg_t srv;
	struct mp_chseg_msg m;
	int64_t t0, dl;
	pid_t pid;
	int rc = 0;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);
	/* The client's liveness slices last 60 s: only the close's wake-up
	 * can end its wait within the bounds below. */
	pid = blocked_client(name, 0, 60000000000LL);
	dl = mp_time_deadline(5000);
	while (rc == 0 && mp_time_now_ns() < dl) {
		rc = mp_chseg_next(&srv, &m);
		if (rc == 0)
			mp_chseg_server_wait(&srv, dl);
	}
	CU_ASSERT_EQUAL_FATAL(rc, 1);
	/* Until it sleeps on its slot (WAIT set). */
	while (!(slot_state(&srv, m.slot) & MP_CHSEG_ST_WAIT) &&
	       mp_time_now_ns() < dl)
		usleep(1000);
	CU_ASSERT_FATAL(slot_state(&srv, m.slot) & MP_CHSEG_ST_WAIT);
	t0 = mp_time_now_ns();
	mp_chseg_close(&srv);
	CU_ASSERT(!shm_exists(name));
	CU_ASSERT_EQUAL(child_status(pid, 10000), 0);
	/* Woken, not found by a liveness slice: generous for a loaded
	 * machine (or memcheck), far below the slice. */
	CU_ASSERT(mp_time_now_ns() - t0 < 10000000000LL);
}

/* The creating thread ends; the server process lives on and serves.
 * Clients must not take the released alive lock for a death. */
static void *create_thread(void *arg)
{
	const char *name = ((void **)arg)[0];
	mp_chseg_t *seg = ((void **)arg)[1];

	return (void *)(intptr_t)mp_chseg_create(seg, name, NULL);
}

static void test_creator_thread_exits(void)
{
	const char *name = new_name();
	int p[2];
	pid_t pid, cpid;
	int rc = -1;

	CU_ASSERT_FATAL(pipe(p) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		static mp_chseg_t seg;
		void *arg[2] = {(void *)name, &seg};
		pthread_t t;
		void *ret;

		close(p[0]);
		if (pthread_create(&t, NULL, create_thread, arg) ||
		    pthread_join(t, &ret) || ret)
			_exit(2);
		rc = 0;
		if (write(p[1], &rc, sizeof(rc)) != sizeof(rc))
			_exit(3);
		rc = serve_loop(&seg, mp_time_deadline(20000));
		/* Not the creating thread: the name goes, the mapping
		 * stays (see mp_chseg_close). */
		mp_chseg_close(&seg);
		_exit(rc ? 4 : 0);
	}
	close(p[1]);
	CU_ASSERT_FATAL(read(p[0], &rc, sizeof(rc)) == sizeof(rc) && rc == 0);
	close(p[0]);
	cpid = mp_test_fork();
	if (cpid == 0) {
		mp_chseg_t cl;
		uint8_t rep[4];
		int32_t ans;

		if (mp_chseg_open(&cl, name))
			_exit(10);
		/* The alive lock is free (its thread ended), yet the
		 * server is alive. */
		if (mp_chseg_call(&cl, T_COPY, "abcd", 4, &ans, rep, 4,
				  mp_time_deadline(10000)) != 4 ||
		    !mp_chseg_server_alive(&cl))
			_exit(11);
		mp_chseg_close(&cl);
		_exit(0);
	}
	CU_ASSERT_EQUAL(child_status(cpid, 15000), 0);
	{
		mp_chseg_t cl;
		struct mp_chseg_req r;

		CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
		CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
		CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_SLOW, 500, 0) == 0);
		/* 500 ms: more than two liveness slices. */
		CU_ASSERT_EQUAL(mp_chseg_wait(&cl, &r, mp_time_deadline(5000)),
				0);
		mp_chseg_done(&cl, &r);
		CU_ASSERT_EQUAL(stop_server(&cl, pid), 0);
		mp_chseg_close(&cl);
	}
}

/* ---- buffered messages ---------------------------------------------- */

/* 500 messages of 0..64 KiB from a child, in order, with back-pressure:
 * through its lane (nlanes 0: the default) or the ring
 * (MP_CHSEG_NO_LANES). */
static void buffered_run(uint32_t nlanes)
{
	static uint8_t buf[MP_CHSEG_MAX_MSG];
	const char *name = new_name();
	struct mp_chseg_cfg cfg = {.ring_records = 8, .nlanes = nlanes};
	struct mp_ring_rec meta;
	mp_chseg_t srv;
	int64_t dl;
	pid_t pid;
	int n = 0, rc;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		mp_chseg_t cl;

		if (mp_chseg_open(&cl, name))
			_exit(10);
		mp_chseg_set_identity(&cl, 77, "bufclient");
		for (int i = 0; i < 500; i++) {
			uint32_t len = (uint32_t)(i * 131) % 20000;

			if (i == 499)
				len = MP_CHSEG_MAX_MSG;
			fill(buf, len, (unsigned)i);
			rc = mp_chseg_bsend(&cl, i, buf, len,
					    mp_time_deadline(10000));
			if (rc < 0 || rc > 8)
				_exit(11);
		}
		if (mp_chseg_bsend(&cl, 0, buf, MP_CHSEG_MAX_MSG + 1, 0) !=
		    -EMSGSIZE)
			_exit(12);
		mp_chseg_close(&cl);
		_exit(0);
	}
	dl = mp_time_deadline(20000);
	while (n < 500 && mp_time_now_ns() < dl) {
		rc = mp_chseg_bpop(&srv, &meta, buf, sizeof(buf));
		if (rc == 0) {
			mp_chseg_server_wait(&srv, dl);
			continue;
		}
		CU_ASSERT_EQUAL_FATAL(rc, 1);
		uint32_t len = n == 499 ? MP_CHSEG_MAX_MSG
					: (uint32_t)(n * 131) % 20000;
		CU_ASSERT_EQUAL(meta.type, n); /* in order */
		CU_ASSERT_EQUAL(meta.len, len);
		CU_ASSERT_EQUAL(meta.sender, 77);
		CU_ASSERT_STRING_EQUAL(meta.id, "bufclient");
		CU_ASSERT(check(buf, len, (unsigned)n, 0));
		if (n % 100 == 0)
			usleep(20000); /* let the ring fill: back-pressure */
		n++;
	}
	CU_ASSERT_EQUAL(n, 500);
	CU_ASSERT_EQUAL(child_status(pid, 5000), 0);
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), 0);
	mp_chseg_close(&srv);
}

static void test_buffered(void)
{
	buffered_run(0);
}

static void test_buffered_ring(void)
{
	buffered_run(MP_CHSEG_NO_LANES);
}

static void test_buffered_corrupt(void)
{
	mp_chseg_t srv, cl;
	struct mp_ring_rec meta;
	uint8_t buf[64];
	uint8_t *data;

	struct mp_chseg_cfg cfg = {.nlanes = MP_CHSEG_NO_LANES};

	CU_ASSERT_FATAL(pair_open(&srv, &cl, &cfg) == 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl, 1, "first", 5, 0), 0);
	/* Scribble over the first record's header in the data area (the
	 * ring header is 7 lines; the data follows). */
	data = (uint8_t *)srv.ring.data;
	memset(data, 0xa5, 16);
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), -EBADMSG);
	/* Reset: the ring serves again.  The reset voided what the
	 * client's handle had read of the consumer's position (mp_ring.h),
	 * so it reads it again and counts exactly: 0. */
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl, 2, "second", 6, 0), 0);
	CU_ASSERT_EQUAL(mp_ring_count(&srv.ring), 1);
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), 1);
	CU_ASSERT_EQUAL(meta.type, 2);
	CU_ASSERT(memcmp(buf, "second", 6) == 0);
	pair_close(&srv, &cl);
}

/* ---- lanes ------------------------------------------------------------ */

/* Pop everything queued now; B's messages (sender 2) must come in order
 * from *next on.  Returns how many of B's came. */
static int drain_b(mp_chseg_t *srv, int *next)
{
	struct mp_ring_rec meta;
	uint8_t buf[16];
	int got = 0, rc;

	while ((rc = mp_chseg_bpop(srv, &meta, buf, sizeof(buf))) == 1) {
		if (meta.sender != 2)
			continue;
		CU_ASSERT_EQUAL(meta.type, *next);
		*next = meta.type + 1;
		got++;
	}
	CU_ASSERT_EQUAL(rc, 0);
	return got;
}

/* A lane whose record lies: -EBADMSG for it, the lane broken; its owner
 * learns at its next send, which goes through the ring instead; once the
 * owner gave it back the lane is freed and serves a new owner. */
static void test_lane_corrupt(void)
{
	mp_chseg_t srv, cl, cl2;
	struct mp_ring_rec meta;
	uint8_t buf[64];

	CU_ASSERT_FATAL(pair_open(&srv, &cl, NULL) == 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl, 1, "first", 5, 0), 0);
	CU_ASSERT_EQUAL_FATAL(cl.lane_idx, 0);
	memset(cl.lane.data, 0xa5, 8); /* the record's header */
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), -EBADMSG);
	CU_ASSERT_EQUAL(mp_lane_word(srv.cons[0].sh) & MP_LANE_ST_MASK,
			MP_LANE_BROKEN);
	/* Nothing more from the broken lane; the server keeps serving. */
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl, 2, "second", 6, 0), 0);
	CU_ASSERT_EQUAL(cl.lane_idx, -1);
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), 1);
	CU_ASSERT_EQUAL(meta.type, 2);
	CU_ASSERT(memcmp(buf, "second", 6) == 0);
	/* Given back (CLOSED) and discarded: free again. */
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), 0);
	CU_ASSERT_EQUAL(mp_lane_word(srv.cons[0].sh) & MP_LANE_ST_MASK,
			MP_LANE_FREE);
	CU_ASSERT_FATAL(mp_chseg_open(&cl2, srv.shm.name) == 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl2, 3, "third", 5, 0), 0);
	CU_ASSERT_EQUAL(cl2.lane_idx, 0);
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)), 1);
	CU_ASSERT_EQUAL(meta.type, 3);
	mp_chseg_close(&cl2);
	pair_close(&srv, &cl);
}

/* One lane, two senders: B goes through the ring while A holds the lane;
 * A leaves; B moves to the lane only once none of its ring records is
 * still queued, and its messages arrive in order throughout. */
static void test_lane_switch_order(void)
{
	struct mp_chseg_cfg cfg = {.nlanes = 1, .ring_records = 1024};
	mp_chseg_t srv, a, b;
	int sent = 0, next = 0, got = 0, switched_at = -1;

	CU_ASSERT_FATAL(pair_open(&srv, &a, &cfg) == 0);
	CU_ASSERT_FATAL(mp_chseg_open(&b, srv.shm.name) == 0);
	mp_chseg_set_identity(&a, 1, "a");
	mp_chseg_set_identity(&b, 2, "b");
	CU_ASSERT_EQUAL(mp_chseg_bsend(&a, 1000, NULL, 0, 0), 0);
	CU_ASSERT_EQUAL(a.lane_idx, 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&b, sent++, NULL, 0, 0), 0);
	CU_ASSERT_EQUAL(b.lane_idx, -1);
	/* B found no free lane and asked the server to look. */
	CU_ASSERT(srv.hdr->lanes_wanted > 0);
	mp_chseg_close(&a);
	/* 300 more without a pop: B's retry (every 256th send) finds its
	 * records in the ring and stays there. */
	while (sent < 300)
		CU_ASSERT_EQUAL(mp_chseg_bsend(&b, sent++, NULL, 0, 0) >= 0, 1);
	CU_ASSERT_EQUAL(b.lane_idx, -1);
	got += drain_b(&srv, &next);
	/* The lane was drained and freed; now the ring empties after each
	 * send, so the next retry moves B to the lane. */
	CU_ASSERT_EQUAL(mp_lane_word(srv.cons[0].sh) & MP_LANE_ST_MASK,
			MP_LANE_FREE);
	while (sent < 1200) {
		CU_ASSERT_EQUAL(mp_chseg_bsend(&b, sent++, NULL, 0, 0) >= 0, 1);
		if (switched_at < 0 && b.lane_idx == 0)
			switched_at = sent;
		got += drain_b(&srv, &next);
	}
	CU_ASSERT(switched_at > 300 && switched_at <= 300 + 256);
	CU_ASSERT_EQUAL(got, sent);
	CU_ASSERT_EQUAL(next, sent);
	mp_chseg_close(&b);
	mp_chseg_close(&srv);
}

/* A client killed with messages in its lane: they are all delivered, then
 * the lane is freed for a new owner. */
static void test_lane_dead_owner(void)
{
	struct mp_chseg_cfg cfg = {.nlanes = 1, .ring_records = 64};
	const char *name = new_name();
	struct mp_ring_rec meta;
	mp_chseg_t srv, cl, cl2;
	uint8_t buf[64];
	int pp[2], next = 0, others = 0, rc;
	pid_t pid;
	char b;

	CU_ASSERT_FATAL(pipe(pp) == 0);
	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		mp_chseg_t c;

		if (mp_chseg_open(&c, name))
			_exit(10);
		mp_chseg_set_identity(&c, 9, "doomed");
		for (int i = 0; i < 5; i++)
			if (mp_chseg_bsend(&c, i, "x", 1, 0) < 0)
				_exit(11);
		if (c.lane_idx != 0 || write(pp[1], "k", 1) != 1)
			_exit(12);
		pause();
		_exit(13);
	}
	close(pp[1]);
	CU_ASSERT_EQUAL_FATAL(read(pp[0], &b, 1), 1);
	close(pp[0]);
	mp_test_kill(pid);
	/* Found dead, but its lane still holds five messages: kept. */
	mp_chseg_reap(&srv, 1);
	CU_ASSERT_EQUAL(mp_lane_word(srv.cons[0].sh) & MP_LANE_ST_MASK,
			MP_LANE_OWNED);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl, 100, "y", 1, 0), 0);
	CU_ASSERT_EQUAL(cl.lane_idx, -1); /* the ring */
	while ((rc = mp_chseg_bpop(&srv, &meta, buf, sizeof(buf))) == 1) {
		if (meta.sender == 9) {
			CU_ASSERT_STRING_EQUAL(meta.id, "doomed");
			CU_ASSERT_EQUAL(meta.type, next);
			next++;
		} else {
			CU_ASSERT_EQUAL(meta.type, 100);
			others++;
		}
	}
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT_EQUAL(next, 5);
	CU_ASSERT_EQUAL(others, 1);
	/* Drained: freed, and a new client gets it. */
	CU_ASSERT_EQUAL(mp_lane_word(srv.cons[0].sh) & MP_LANE_ST_MASK,
			MP_LANE_FREE);
	CU_ASSERT_FATAL(mp_chseg_open(&cl2, name) == 0);
	CU_ASSERT_EQUAL(mp_chseg_bsend(&cl2, 7, "z", 1, 0), 0);
	CU_ASSERT_EQUAL(cl2.lane_idx, 0);
	mp_chseg_close(&cl2);
	mp_chseg_close(&cl);
	mp_chseg_close(&srv);
}

/* A sender killed at random points of a stream through its lane: what
 * arrives is a gap-free prefix of what it sent, every message intact (a
 * push cut short leaves nothing visible), and the lane is freed after. */
static void test_lane_killed_midstream(void)
{
	struct mp_chseg_cfg cfg = {.nlanes = 1, .ring_records = 256};
	const char *name = new_name();
	struct mp_ring_rec meta;
	uint8_t buf[256];
	mp_chseg_t srv;
	int rounds_ok = 0, rc;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);
	for (int round = 0; round < 12; round++) {
		int next = 0, bad = 0;
		pid_t pid = mp_test_fork();

		if (pid == 0) {
			mp_chseg_t c;

			if (mp_chseg_open(&c, name))
				_exit(10);
			mp_chseg_set_identity(&c, 5, "stream");
			for (uint32_t i = 0;; i++) {
				uint32_t len = 1 + i % 200;

				fill(buf, len, i);
				if (mp_chseg_bsend(&c, (int32_t)i, buf, len,
						   MP_TIME_FOREVER) < 0)
					_exit(11);
			}
		}
		/* Let it start (bounded: a slow child, under TSan say, may
		 * take a while), run a while more (filling the lane, then
		 * racing our pops), then kill it wherever it is. */
		int64_t dl = mp_time_deadline(10000);

		for (int k = 0; k < 20 + round * 37 ||
				(next == 0 && mp_time_now_ns() < dl);
		     k++) {
			rc = mp_chseg_bpop(&srv, &meta, buf, sizeof(buf));
			if (rc == 1) {
				bad += meta.type != next ||
				       meta.len != 1 + (uint32_t)next % 200 ||
				       !check(buf, meta.len, (unsigned)next, 0);
				next++;
			}
			usleep(50);
		}
		mp_test_kill(pid);
		mp_chseg_reap(&srv, 1);
		while ((rc = mp_chseg_bpop(&srv, &meta, buf, sizeof(buf))) ==
		       1) {
			bad += meta.type != next ||
			       meta.len != 1 + (uint32_t)next % 200 ||
			       !check(buf, meta.len, (unsigned)next, 0);
			next++;
		}
		CU_ASSERT_EQUAL(rc, 0);
		CU_ASSERT_EQUAL(bad, 0);
		CU_ASSERT(next > 0);
		/* Drained and its owner dead: free for the next round. */
		CU_ASSERT_EQUAL(mp_lane_word(srv.cons[0].sh) & MP_LANE_ST_MASK,
				MP_LANE_FREE);
		rounds_ok += bad == 0 && next > 0;
	}
	CU_ASSERT_EQUAL(rounds_ok, 12);
	mp_chseg_close(&srv);
}

#define MS_SENDERS 4
#define MS_EACH	   3000

struct ms_thread {
	mp_chseg_t *cl;
	uint32_t thread, count;
	int rc;
};

static void *ms_send(void *arg)
{
	struct ms_thread *t = arg;
	uint32_t rec[2];

	for (uint32_t i = 0; i < t->count; i++) {
		rec[0] = t->thread;
		rec[1] = i;
		t->rc = mp_chseg_bsend(t->cl, 1, rec, sizeof(rec),
				       mp_time_deadline(20000));
		if (t->rc < 0)
			break;
	}
	return NULL;
}

/* Four sender processes, two lanes (two senders through the ring), the
 * first with two threads sharing its handle; a small bound
 * (back-pressure).  Every message arrives once, each thread's in order. */
static void test_lanes_many_senders(void)
{
	struct mp_chseg_cfg cfg = {.nlanes = 2, .ring_records = 16};
	const char *name = new_name();
	uint32_t next[MS_SENDERS][2] = {{0}}, rec[2];
	struct mp_ring_rec meta;
	pid_t pid[MS_SENDERS];
	mp_chseg_t srv;
	int64_t dl;
	int total = 0, rc;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);
	for (int k = 0; k < MS_SENDERS; k++) {
		pid[k] = mp_test_fork();
		if (pid[k] == 0) {
			struct ms_thread t[2];
			pthread_t th;
			mp_chseg_t cl;

			if (mp_chseg_open(&cl, name))
				_exit(10);
			mp_chseg_set_identity(&cl, (uint32_t)k, "ms");
			for (int j = 0; j < 2; j++)
				t[j] = (struct ms_thread){
					&cl, (uint32_t)j,
					k == 0 ? MS_EACH / 2 : (j ? 0 : MS_EACH),
					0};
			if (pthread_create(&th, NULL, ms_send, &t[1]))
				_exit(11);
			ms_send(&t[0]);
			pthread_join(th, NULL);
			mp_chseg_close(&cl);
			_exit(t[0].rc < 0 || t[1].rc < 0 ? 12 : 0);
		}
	}
	dl = mp_time_deadline(30000);
	while (total < MS_SENDERS * MS_EACH && mp_time_now_ns() < dl) {
		rc = mp_chseg_bpop(&srv, &meta, rec, sizeof(rec));
		if (rc == 0) {
			mp_chseg_server_wait(&srv, mp_time_deadline(100));
			continue;
		}
		CU_ASSERT_EQUAL_FATAL(rc, 1);
		CU_ASSERT_EQUAL_FATAL(meta.len, sizeof(rec));
		CU_ASSERT_FATAL(meta.sender < MS_SENDERS && rec[0] < 2);
		CU_ASSERT_EQUAL(rec[1], next[meta.sender][rec[0]]);
		next[meta.sender][rec[0]] = rec[1] + 1;
		total++;
	}
	CU_ASSERT_EQUAL(total, MS_SENDERS * MS_EACH);
	for (int k = 0; k < MS_SENDERS; k++)
		CU_ASSERT_EQUAL(child_status(pid[k], 5000), 0);
	CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, rec, sizeof(rec)), 0);
	printf("[%d messages] ", total);
	mp_chseg_close(&srv);
}

/* ---- scribbles ---------------------------------------------------------- */

/* One round trip through the pair on whatever slot it gets; 0 if fine. */
static int pair_rt(mp_chseg_t *srv, mp_chseg_t *cl, uint32_t *slot)
{
	struct mp_chseg_req r;
	struct mp_chseg_msg m;
	int rc;

	if (mp_chseg_loan(cl, &r, 0))
		return -1;
	memcpy(r.buf, "ping", 4);
	if (mp_chseg_send(cl, &r, T_COPY, 5, 4))
		return -2;
	do {
		rc = mp_chseg_next(srv, &m);
	} while (rc < 0 || (rc == 1 && m.kind != MP_CHSEG_REQUEST));
	if (rc != 1 || m.len != 4 || memcmp(m.data, "ping", 4))
		return -3;
	if (mp_chseg_reply(srv, m.ticket, 9, "pong", 4))
		return -4;
	if (mp_chseg_wait(cl, &r, mp_time_deadline(1000)) || r.rlen != 4 ||
	    memcmp(r.rdata, "pong", 4))
		return -5;
	if (slot)
		*slot = r.slot;
	mp_chseg_done(cl, &r);
	return 0;
}

static void test_scribbles(void)
{
	mp_chseg_t srv, cl, cl2;
	struct mp_chseg_req r, r2;
	struct mp_chseg_msg m;
	uint32_t s0;

	CU_ASSERT_FATAL(pair_open(&srv, &cl, NULL) == 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl2, srv.shm.name) == 0);
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, &s0), 0);

	/* An impossible state word on one slot: -EBADMSG for that slot,
	 * reset; its client told; the others fine; the slot usable again. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl2, &r2, 0) == 0);
	ctl(&srv, r2.slot)->state = 0xdeadbeef;
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), -EBADMSG);
	CU_ASSERT_EQUAL(m.slot, r2.slot);
	CU_ASSERT_EQUAL(slot_state(&srv, r2.slot) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_FREE);
	CU_ASSERT_EQUAL(mp_chseg_send(&cl2, &r2, T_COPY, 0, 1), -EBADMSG);
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);

	/* A length over the limit in a published request; its waiting
	 * client is told -EBADMSG, the other's request goes through. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	CU_ASSERT_FATAL(mp_chseg_loan(&cl2, &r2, 0) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 0, 4) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl2, &r2, T_COPY, 0, 4) == 0);
	ctl(&srv, r2.slot)->len = 0x7fffffff;
	{
		int bad = 0, good = 0, rc;

		for (int k = 0; k < 4; k++) {
			rc = mp_chseg_next(&srv, &m);
			if (rc == -EBADMSG) {
				bad++;
				CU_ASSERT_EQUAL(m.slot, r2.slot);
			} else if (rc == 1) {
				good++;
				CU_ASSERT_EQUAL(m.slot, r.slot);
				CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket,
							       1, "ok", 2),
						0);
			}
		}
		CU_ASSERT_EQUAL(bad, 1);
		CU_ASSERT_EQUAL(good, 1);
	}
	CU_ASSERT_EQUAL(mp_chseg_wait(&cl2, &r2, mp_time_deadline(1000)),
			-EBADMSG);
	CU_ASSERT_EQUAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)), 0);
	CU_ASSERT_EQUAL(r.rlen, 2);
	mp_chseg_done(&cl, &r);

	/* A lying reply: length over the limit, or an unknown area. */
	for (int k = 0; k < 2; k++) {
		CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
		CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 0, 0) == 0);
		CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
		CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 0, "abc", 3), 0);
		if (k == 0)
			ctl(&srv, r.slot)->rlen = MP_CHSEG_MAX_MSG + 1;
		else
			ctl(&srv, r.slot)->rarea = 7;
		CU_ASSERT_EQUAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)),
				-EBADMSG);
		/* The client released the slot (parked it): it serves
		 * again. */
		CU_ASSERT_EQUAL(slot_state(&srv, r.slot) & MP_CHSEG_ST_MASK,
				MP_CHSEG_ST_REPLIED);
		CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	}

	/* A state no party ever writes, and a WAIT bit where no client
	 * can sleep, beyond the slots in use. */
	ctl(&srv, 2)->state =
		(5u << 8) | MP_CHSEG_ST_REPLIED | MP_CHSEG_ST_WAIT;
	ctl(&srv, 3)->state = (5u << 8) | 7u;
	__atomic_store_n(&srv.hdr->hiwater, 4, __ATOMIC_SEQ_CST);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), -EBADMSG);
	CU_ASSERT(m.slot == 2 || m.slot == 3);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), -EBADMSG);
	CU_ASSERT(m.slot == 2 || m.slot == 3);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), 0);
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);

	/* A reply the server holds, scribbled before it replies. */
	CU_ASSERT_FATAL(mp_chseg_loan(&cl, &r, 0) == 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 0, 0) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	ctl(&srv, r.slot)->state = (123u << 8) | MP_CHSEG_ST_REQ;
	CU_ASSERT_EQUAL(mp_chseg_reply(&srv, m.ticket, 0, NULL, 0), -EBADMSG);
	CU_ASSERT_EQUAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)),
			-EBADMSG);
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);

	/* hiwater far beyond the slots: clamped. */
	__atomic_store_n(&srv.hdr->hiwater, 0xffffffffu, __ATOMIC_SEQ_CST);
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, 0), 0);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);

	/* Geometry fields rewritten after open: the handles do not care. */
	srv.hdr->nslots = 1000;
	srv.hdr->max_msg = 1u << 30;
	srv.hdr->area = 3;
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	mp_chseg_close(&cl2);
	pair_close(&srv, &cl);
}

/* Random scribbles over every slot's control line and the hot header
 * words while a client keeps sending: nothing may crash or read out of
 * bounds (run under ASan); afterwards, everything works again. */
static void test_random_scribbles(void)
{
	mp_chseg_t srv, cl;
	struct mp_chseg_req r;
	struct mp_chseg_msg m;
	int ok = 0, bad = 0;

	memset(&r, 0, sizeof(r));
	CU_ASSERT_FATAL(pair_open(&srv, &cl,
				  &(struct mp_chseg_cfg){
					  .nslots = 8, .max_msg = 4096}) == 0);
	for (int it = 0; it < 20000; it++) {
		unsigned x = mp_test_rand();
		int rc;

		if (x % 3 == 0) {
			uint32_t i = (x >> 8) % srv.nslots;
			uint32_t *w =
				(uint32_t *)ctl(&srv, i) + ((x >> 16) % 16);

			*w = mp_test_rand() ^ (x & 1 ? 0 : *w);
		} else if (x % 97 == 1) {
			srv.hdr->hiwater = mp_test_rand() % 20;
		}
		if (mp_chseg_loan(&cl, &r, 0) == 0) {
			uint32_t len = mp_test_rand() % 5000;

			rc = mp_chseg_send(&cl, &r, T_COPY, 1, len);
			if (rc == -EMSGSIZE)
				mp_chseg_done(&cl, &r);
		}
		for (int k = 0; k < 4; k++) {
			rc = mp_chseg_next(&srv, &m);
			if (rc == 1 && m.kind == MP_CHSEG_REQUEST) {
				uint8_t *b = mp_chseg_reply_buf(&srv, m.ticket,
								NULL);
				CU_ASSERT(m.len <= srv.max_msg);
				CU_ASSERT(in_seg(&srv, m.data, m.len));
				if (b && m.len)
					memcpy(b, m.data, m.len);
				mp_chseg_reply(&srv, m.ticket, 0, b, m.len);
			} else if (rc == 1) {
				mp_chseg_reply(&srv, m.ticket, 0, NULL, 0);
			} else if (rc < 0) {
				bad++;
			}
		}
		if (r.phase) {
			rc = mp_chseg_wait(&cl, &r, 0);
			if (rc == 0) {
				CU_ASSERT(r.rlen <= cl.max_msg);
				CU_ASSERT(in_seg(&cl, r.rdata, r.rlen));
				ok++;
				mp_chseg_done(&cl, &r);
			} else if (rc == -ETIMEDOUT) {
				mp_chseg_cancel(&cl, &r);
				if (r.phase)
					mp_chseg_done(&cl, &r);
			}
		}
		memset(&r, 0, sizeof(r));
	}
	CU_ASSERT(bad > 0);
	CU_ASSERT(ok > 0);
	/* Clean up: every slot back to FREE by the server's own means. */
	srv.hdr->hiwater = srv.nslots;
	for (uint32_t i = 0; i < srv.nslots; i++)
		ctl(&srv, i)->state = 0xffffffff;
	for (uint32_t i = 0; i < 2 * srv.nslots; i++)
		mp_chseg_next(&srv, &m);
	for (uint32_t i = 0; i < srv.nslots; i++)
		CU_ASSERT_EQUAL(slot_state(&srv, i) & MP_CHSEG_ST_MASK,
				MP_CHSEG_ST_FREE);
	for (int i = 0; i < 20; i++)
		CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	pair_close(&srv, &cl);
}

/* ---- credentials, doorbell, opening, slots -------------------------- */

static void test_credentials(void)
{
	const char *name = new_name();
	struct creds c;
	mp_chseg_t cl;
	pid_t srv;
	int rc;

	srv = start_server(name, NULL, -1);
	CU_ASSERT_FATAL(srv > 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	mp_chseg_set_identity(&cl, 4242, "a-very-long-identity-string");
	rc = mp_chseg_call(&cl, T_CREDS, NULL, 0, NULL, &c, sizeof(c),
			   mp_time_deadline(5000));
	CU_ASSERT_EQUAL_FATAL(rc, (int)sizeof(c));
	CU_ASSERT_EQUAL(c.pid, getpid());
	CU_ASSERT_EQUAL(c.uid, (int32_t)geteuid());
	CU_ASSERT_EQUAL(c.gid, (int32_t)getegid());
	CU_ASSERT_EQUAL(c.cred, MP_CHSEG_CRED_CHECKED);
	CU_ASSERT_EQUAL(c.sender, 4242);
	CU_ASSERT_STRING_EQUAL(c.id, "a-very-long-ide"); /* truncated */
	/* A lie about the uid is not confirmed. */
	cl.uid = geteuid() + 1;
	rc = mp_chseg_call(&cl, T_CREDS, NULL, 0, NULL, &c, sizeof(c),
			   mp_time_deadline(5000));
	CU_ASSERT_EQUAL_FATAL(rc, (int)sizeof(c));
	CU_ASSERT_EQUAL(c.uid, (int32_t)geteuid() + 1);
	CU_ASSERT_EQUAL(c.cred, 0);
	cl.uid = geteuid();
	CU_ASSERT_EQUAL(stop_server(&cl, srv), 0);
	mp_chseg_close(&cl);
}

static void test_doorbell(void)
{
	const char *name = new_name();
	mp_chseg_t srv;
	int64_t t0;
	pid_t pid;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, NULL) == 0);
	/* Nothing to do: the deadline. */
	t0 = mp_time_now_ns();
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, mp_time_deadline(100)), 0);
	CU_ASSERT(mp_time_now_ns() - t0 >= 100000000);
	CU_ASSERT(mp_time_now_ns() - t0 < 1000000000);
	/* A kick from another process, while the server sleeps. */
	pid = mp_test_fork();
	if (pid == 0) {
		mp_chseg_t cl;

		if (mp_chseg_open(&cl, name))
			_exit(10);
		usleep(200000);
		mp_chseg_kick(&cl);
		mp_chseg_close(&cl);
		_exit(0);
	}
	t0 = mp_time_now_ns();
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, mp_time_deadline(5000)), 1);
	CU_ASSERT(mp_time_now_ns() - t0 >= 150000000);
	CU_ASSERT(mp_time_now_ns() - t0 < 2000000000);
	CU_ASSERT_EQUAL(child_status(pid, 5000), 0);
	/* A kick between two waits is not lost: the wait returns 1, well
	 * before its 30 s deadline. */
	mp_chseg_kick(&srv);
	t0 = mp_time_now_ns();
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, mp_time_deadline(30000)), 1);
	CU_ASSERT(mp_time_now_ns() - t0 < 10000000000LL);
	/* ... and consumed by that wait. */
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, mp_time_deadline(50)), 0);
	/* A buffered message wakes it too. */
	pid = mp_test_fork();
	if (pid == 0) {
		mp_chseg_t cl;

		if (mp_chseg_open(&cl, name))
			_exit(10);
		usleep(200000);
		_exit(mp_chseg_bsend(&cl, 3, "b", 1, 0) == 0 ? 0 : 11);
	}
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, mp_time_deadline(5000)), 1);
	{
		struct mp_ring_rec meta;
		char b;

		CU_ASSERT_EQUAL(mp_chseg_bpop(&srv, &meta, &b, 1), 1);
		CU_ASSERT_EQUAL(meta.type, 3);
	}
	CU_ASSERT_EQUAL(child_status(pid, 5000), 0);
	mp_chseg_close(&srv);
}

/*
 * No wake-up lost on the buffered path: clients send a trickle with
 * pauses long enough for the server to go to sleep between messages, so
 * many messages land while it sleeps or is about to.  Every message must
 * arrive, each client's in order, and no wait of the server may end
 * empty-handed for long (a lost wake-up shows as a receive that waits
 * for the next message or the 3 s bound; the check is on delivery, not
 * speed).  nofence: 1 the clients, 2 the server run without membarrier
 * (MESSIP_NO_MEMBARRIER): the clients then publish with locked stores
 * (1: their own kernel says no; 2: the server does not promise to fence
 * them) and the server, in 2, also sleeps in slices.
 */
static void buffered_trickle(int nofence)
{
	enum { NCL = 2, EACH = 2000 };
	const char *name = new_name();
	int rdy[2];
	pid_t srvpid, c[NCL];
	char one;

	CU_ASSERT_FATAL(pipe(rdy) == 0);
	srvpid = mp_test_fork();
	if (srvpid == 0) {
		uint32_t next[NCL] = {0};
		struct mp_ring_rec meta;
		uint8_t buf[64];
		mp_chseg_t srv;
		int n = 0, rc;

		if (nofence == 2)
			setenv("MESSIP_NO_MEMBARRIER", "1", 1);
		if (mp_chseg_create(&srv, name, NULL))
			_exit(10);
		/* Straight to sleep: more races with a publication. */
		srv.spin_ns = 0;
		srv.yield_ns = 0;
		/* The promise to fence follows this process's ability. */
		if (srv.hdr->fence != (nofence == 2 ? 0u : 1u) &&
		    !(nofence != 2 && mp_fence_remote() < 0))
			_exit(11);
		if (write(rdy[1], "r", 1) != 1)
			_exit(12);
		while (n < NCL * EACH) {
			rc = mp_chseg_bpop(&srv, &meta, buf, sizeof(buf));
			if (rc == 0) {
				int64_t dl = mp_time_deadline(3000);

				if (!mp_chseg_server_wait(&srv, dl) &&
				    mp_chseg_bpop(&srv, &meta, buf,
						  sizeof(buf)) == 0)
					_exit(13); /* 3 s, nothing came */
				continue;
			}
			if (rc != 1 || meta.sender >= NCL ||
			    (uint32_t)meta.type != next[meta.sender] ||
			    meta.len != 8 || !check(buf, 8, (unsigned)meta.type, 0))
				_exit(14);
			next[meta.sender]++;
			n++;
		}
		mp_chseg_close(&srv);
		_exit(0);
	}
	CU_ASSERT_FATAL(read(rdy[0], &one, 1) == 1);
	close(rdy[0]);
	close(rdy[1]);
	for (uint32_t i = 0; i < NCL; i++) {
		c[i] = mp_test_fork();
		if (c[i] == 0) {
			uint8_t buf[8];
			mp_chseg_t cl;
			int want;

			if (nofence == 1)
				setenv("MESSIP_NO_MEMBARRIER", "1", 1);
			if (mp_chseg_open(&cl, name))
				_exit(20);
			/* Plain publications exactly when both sides can
			 * fence (the kernel decides, the knob forbids). */
			want = nofence == 0 && mp_fence_register() &&
			       cl.hdr->fence;
			if (cl.ring.plain_publish != want)
				_exit(21);
			mp_chseg_set_identity(&cl, i, "trickle");
			srandom(getpid());
			for (int k = 0; k < EACH; k++) {
				fill(buf, 8, (unsigned)k);
				if (mp_chseg_bsend(&cl, k, buf, 8,
						   mp_time_deadline(10000)) < 0)
					_exit(22);
				/* the server does not spin: it goes to
				 * sleep as we push, again and again */
				if (random() % 4 == 0)
					usleep((useconds_t)(random() % 50));
			}
			mp_chseg_close(&cl);
			_exit(0);
		}
	}
	for (int i = 0; i < NCL; i++)
		CU_ASSERT_EQUAL(child_status(c[i], 30000), 0);
	CU_ASSERT_EQUAL(child_status(srvpid, 30000), 0);
	CU_ASSERT(!shm_exists(name));
}

static void test_buffered_trickle_fenced(void)
{
	buffered_trickle(0);
}

static void test_buffered_trickle_clients_unfenced(void)
{
	buffered_trickle(1);
}

static void test_buffered_trickle_server_unfenced(void)
{
	buffered_trickle(2);
}

static void test_open_errors(void)
{
	const char *name = new_name();
	struct mp_chseg_cfg bad = {.nslots = MP_CHSEG_MAX_SLOTS + 1};
	mp_chseg_t srv, cl;
	mp_shm_t other;

	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), -ENOENT);
	CU_ASSERT_EQUAL(mp_chseg_create(&srv, name, &bad), -EINVAL);
	bad.nslots = 1;
	bad.max_msg = MP_CHSEG_MAX_MSG + 1;
	CU_ASSERT_EQUAL(mp_chseg_create(&srv, name, &bad), -EINVAL);
	bad.max_msg = 100;
	bad.ring_bytes = 100; /* not a power of two */
	CU_ASSERT_EQUAL(mp_chseg_create(&srv, name, &bad), -EINVAL);
	CU_ASSERT_EQUAL(mp_chseg_size(&bad), 0);
	bad.ring_bytes = 0;
	CU_ASSERT(mp_chseg_size(&bad) > 0);
	CU_ASSERT(!shm_exists(name));

	/* Another kind of segment under the name. */
	CU_ASSERT_FATAL(mp_shm_create(&other, name, 0x1234, 1, 4096, 0600,
				      (gid_t)-1) == 0);
	mp_shm_publish(&other);
	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), -EBADMSG);
	mp_shm_close(&other);

	/* A header whose geometry disagrees with the object. */
	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &bad) == 0);
	CU_ASSERT_EQUAL(mp_chseg_create(&cl, name, &bad), -EEXIST);
	srv.hdr->nslots = 2;
	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), -EBADMSG);
	srv.hdr->nslots = 1;
	srv.hdr->ring_off += 64;
	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), -EBADMSG);
	srv.hdr->ring_off -= 64;
	/* A server in another PID namespace. */
	srv.hdr->srv_pidns ^= 1;
	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), -EXDEV);
	srv.hdr->srv_pidns ^= 1;
	/* A pid that was reused since (start time differs). */
	srv.hdr->srv_start += 1;
	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), -ESRCH);
	srv.hdr->srv_start -= 1;
	CU_ASSERT_EQUAL(mp_chseg_open(&cl, name), 0);
	mp_chseg_close(&cl);
	mp_chseg_close(&srv);
	mp_chseg_close(&srv); /* idempotent */
	CU_ASSERT(!shm_exists(name));
}

static void test_slot_exhaustion(void)
{
	const char *name = new_name();
	struct mp_chseg_cfg cfg = {.nslots = 2, .max_msg = 128};
	struct mp_chseg_req a, b, c;
	mp_chseg_t srv, cl;
	int64_t t0;
	pid_t pid;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	CU_ASSERT_EQUAL(mp_chseg_loan(&cl, &a, 0), 0);
	CU_ASSERT_EQUAL(mp_chseg_loan(&cl, &b, 0), 0);
	CU_ASSERT_NOT_EQUAL(a.slot, b.slot);
	t0 = mp_time_now_ns();
	CU_ASSERT_EQUAL(mp_chseg_loan(&cl, &c, mp_time_deadline(50)),
			-ETIMEDOUT);
	CU_ASSERT(mp_time_now_ns() - t0 >= 50000000);
	/* A waiter in another process is woken when a slot frees: once it
	 * waits (counted in free_waiters: it found both slots taken), the
	 * slot is freed, and it must get it well before its deadline. */
	pid = mp_test_fork();
	if (pid == 0) {
		mp_chseg_t c2;
		struct mp_chseg_req x;

		if (mp_chseg_open(&c2, name))
			_exit(10);
		if (mp_chseg_loan(&c2, &x, mp_time_deadline(30000)))
			_exit(11);
		_exit(0);
	}
	t0 = mp_time_now_ns();
	while (!__atomic_load_n(&srv.hdr->free_waiters, __ATOMIC_SEQ_CST) &&
	       mp_time_now_ns() - t0 < 10000000000LL)
		usleep(1000);
	CU_ASSERT_FATAL(
		__atomic_load_n(&srv.hdr->free_waiters, __ATOMIC_SEQ_CST) > 0);
	t0 = mp_time_now_ns();
	mp_chseg_done(&cl, &a); /* an abandoned loan frees the slot */
	CU_ASSERT_EQUAL(child_status(pid, 10000), 0);
	CU_ASSERT(mp_time_now_ns() - t0 < 10000000000LL);
	/* The child died holding that slot: reap it, then loan again. */
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 1);
	CU_ASSERT_EQUAL(mp_chseg_loan(&cl, &c, 0), 0);
	mp_chseg_done(&cl, &b);
	mp_chseg_done(&cl, &c);
	mp_chseg_close(&cl);
	mp_chseg_close(&srv);
}

/* ---- parked slots ------------------------------------------------------ */

static uint32_t park_of(mp_chseg_t *seg, uint32_t i)
{
	return __atomic_load_n((uint32_t *)(void *)(seg->slots +
						    (size_t)i * seg->block +
						    seg->block - 64),
			       __ATOMIC_ACQUIRE);
}

/* Fork a client (identity 5, "parker") that makes one round trip on
 * `name`, served here through srv, and then stays, idle, with its slot
 * parked, until killed.  Returns its pid once it parked. */
static pid_t parking_client(const char *name, mp_chseg_t *srv)
{
	struct mp_chseg_msg m;
	int p[2], rc = 0;
	int64_t dl;
	pid_t pid;
	char b;

	if (pipe(p))
		return -1;
	pid = mp_test_fork();
	if (pid == 0) {
		struct mp_chseg_req r;
		mp_chseg_t cl;

		close(p[0]);
		if (mp_chseg_open(&cl, name))
			_exit(10);
		mp_chseg_set_identity(&cl, 5, "parker");
		if (mp_chseg_loan(&cl, &r, mp_time_deadline(5000)))
			_exit(11);
		memcpy(r.buf, "park", 4);
		if (mp_chseg_send(&cl, &r, T_COPY, 1, 4) ||
		    mp_chseg_wait(&cl, &r, mp_time_deadline(5000)) ||
		    r.rlen != 4 || memcmp(r.rdata, "qbsl", 4))
			_exit(12);
		mp_chseg_done(&cl, &r);
		if (write(p[1], &b, 1) != 1)
			_exit(13);
		pause();
		_exit(0);
	}
	close(p[1]);
	dl = mp_time_deadline(5000);
	while (pid > 0 && mp_time_now_ns() < dl &&
	       ((rc = mp_chseg_next(srv, &m)) != 1 ||
		m.kind != MP_CHSEG_REQUEST))
		if (rc == 0)
			mp_chseg_server_wait(srv, dl);
	if (rc != 1 || serve_one(srv, &m) != 0) {
		close(p[0]);
		return -1;
	}
	return child_ready(pid, p[0]);
}

/*
 * A client's slot stays parked (REPLIED, its identity in it) after
 * mp_chseg_done, and its next loan re-uses it.  Another client that finds
 * no free slot takes a parked one over while its owner is idle; the owner
 * coming back takes one over in turn.  Each request carries the identity
 * of the client that sent it, and each take-over moves the generation.
 */
static void test_parked_take_over(void)
{
	const char *name = new_name();
	struct mp_chseg_cfg cfg = {.nslots = 1, .max_msg = 256};
	struct mp_chseg_msg m;
	struct mp_chseg_req r;
	mp_chseg_t srv, cl;
	struct creds c;
	uint32_t w, w2;
	pid_t pid;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	mp_chseg_set_identity(&cl, 1, "owner");

	/* Our round trip parks slot 0; the next loan re-uses it. */
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	w = slot_state(&srv, 0);
	CU_ASSERT_EQUAL(w & MP_CHSEG_ST_MASK, MP_CHSEG_ST_REPLIED);
	CU_ASSERT_EQUAL(park_of(&srv, 0), w);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->pid, (uint32_t)getpid());
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0); /* alive: untouched */
	CU_ASSERT_EQUAL(slot_state(&srv, 0), w);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_loan(&cl, &r, 0), 0);
	CU_ASSERT_EQUAL(r.slot, 0);
	CU_ASSERT_EQUAL(r.gen, (w >> MP_CHSEG_GEN_SHIFT) + 1);
	/* Re-used as it was: the state word is not written before the
	 * request is published. */
	CU_ASSERT_EQUAL(slot_state(&srv, 0), w);
	CU_ASSERT_NOT_EQUAL(park_of(&srv, 0), w); /* not parked now */
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &m), 0);
	mp_chseg_done(&cl, &r); /* a loan never sent: parked again */
	CU_ASSERT_EQUAL(slot_state(&srv, 0), w);
	CU_ASSERT_EQUAL(park_of(&srv, 0), w);
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	w = slot_state(&srv, 0);
	CU_ASSERT_EQUAL(park_of(&srv, 0), w);

	/* Another process, with no free slot, takes ours over while we are
	 * idle; its request carries its own identity. */
	pid = parking_client(name, &srv);
	CU_ASSERT_FATAL(pid > 0);
	w2 = slot_state(&srv, 0);
	CU_ASSERT_EQUAL(w2 & MP_CHSEG_ST_MASK, MP_CHSEG_ST_REPLIED);
	CU_ASSERT_EQUAL(w2 >> MP_CHSEG_GEN_SHIFT,
			(w >> MP_CHSEG_GEN_SHIFT) + 1);
	CU_ASSERT_EQUAL(park_of(&srv, 0), w2);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->pid, (uint32_t)pid);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->sender, 5);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);

	/* We come back: our slot is gone, we take it over in turn, and the
	 * server sees us, not the parker. */
	CU_ASSERT_EQUAL_FATAL(mp_chseg_loan(&cl, &r, 0), 0);
	CU_ASSERT_EQUAL(r.slot, 0);
	CU_ASSERT_EQUAL(r.gen, (w2 >> MP_CHSEG_GEN_SHIFT) + 1);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_CREDS, 3, 0) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	CU_ASSERT_EQUAL(m.kind, MP_CHSEG_REQUEST);
	CU_ASSERT_EQUAL(m.pid, getpid());
	CU_ASSERT_EQUAL(m.sender, 1);
	CU_ASSERT_STRING_EQUAL(m.id, "owner");
	CU_ASSERT_EQUAL(m.cred, MP_CHSEG_CRED_CHECKED);
	CU_ASSERT_EQUAL(serve_one(&srv, &m), 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)),
			      0);
	CU_ASSERT_EQUAL_FATAL(r.rlen, sizeof(c));
	memcpy(&c, r.rdata, sizeof(c));
	CU_ASSERT_EQUAL(c.pid, getpid());
	CU_ASSERT_EQUAL(c.sender, 1);
	mp_chseg_done(&cl, &r);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->pid, (uint32_t)getpid());

	/* A slot whose client still reads its reply is not parked: the
	 * other process cannot take it, and waits. */
	CU_ASSERT_EQUAL_FATAL(mp_chseg_loan(&cl, &r, 0), 0);
	CU_ASSERT_FATAL(mp_chseg_send(&cl, &r, T_COPY, 4, 0) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &m), 1);
	CU_ASSERT_EQUAL(serve_one(&srv, &m), 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)),
			      0);
	{
		mp_chseg_t c2;
		struct mp_chseg_req x;

		/* Same process, other handle: it may only take over a
		 * parked slot, and ours is in use. */
		CU_ASSERT_FATAL(mp_chseg_open(&c2, name) == 0);
		CU_ASSERT_EQUAL(mp_chseg_loan(&c2, &x, mp_time_deadline(20)),
				-ETIMEDOUT);
		mp_chseg_done(&cl, &r);
		CU_ASSERT_EQUAL(mp_chseg_loan(&c2, &x, 0), 0);
		mp_chseg_done(&c2, &x);
		mp_chseg_close(&c2);
	}
	mp_test_kill(pid);

	/* A client that closes frees the slots it parked. */
	CU_ASSERT_EQUAL(pair_rt(&srv, &cl, NULL), 0);
	CU_ASSERT_EQUAL(slot_state(&srv, 0) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_REPLIED);
	mp_chseg_close(&cl);
	CU_ASSERT_EQUAL(slot_state(&srv, 0) & MP_CHSEG_ST_MASK,
			MP_CHSEG_ST_FREE);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->pid, 0);
	mp_chseg_close(&srv);
	CU_ASSERT(!shm_exists(name));
}

/*
 * A client that dies with its slot parked: the reaper reclaims the slot
 * (on demand, or by itself after reap_ns) and reports MP_CHSEG_GONE with
 * no ticket held; a client needing a slot takes one over without
 * waiting for the reaper.  A take-over in progress (CLAIMED with WAIT,
 * the previous owner's pid still in) is never blamed.  An idle server
 * does not wake up for a live client's parked slot.
 */
static void test_parked_dead_client(void)
{
	const char *name = new_name();
	struct mp_chseg_cfg cfg = {.nslots = 1, .max_msg = 256};
	struct mp_chseg_msg g;
	struct mp_chseg_req r;
	mp_chseg_t srv, cl;
	int64_t t0;
	uint32_t w;
	pid_t pid;

	CU_ASSERT_FATAL(mp_chseg_create(&srv, name, &cfg) == 0);

	/* On demand. */
	pid = parking_client(name, &srv);
	CU_ASSERT_FATAL(pid > 0);
	w = slot_state(&srv, 0);
	CU_ASSERT_EQUAL(w & MP_CHSEG_ST_MASK, MP_CHSEG_ST_REPLIED);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);
	CU_ASSERT_EQUAL(mp_chseg_slots_in_use(&srv), 0);
	/* Alive and parked: the server's wait sleeps to its deadline, no
	 * reaping slices. */
	t0 = mp_time_now_ns();
	srv.spin_ns = srv.yield_ns = 0;
	srv.reap_ns = 20000000;
	CU_ASSERT_EQUAL(mp_chseg_server_wait(&srv, mp_time_deadline(100)), 0);
	CU_ASSERT(mp_time_now_ns() - t0 >= 100000000);
	CU_ASSERT_EQUAL(slot_state(&srv, 0), w);
	mp_test_kill(pid);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 1);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &g), 1);
	CU_ASSERT_EQUAL(g.kind, MP_CHSEG_GONE);
	CU_ASSERT_EQUAL(g.pid, pid);
	CU_ASSERT_EQUAL(g.sender, 5);
	CU_ASSERT_PTR_NULL(mp_chseg_reply_buf(&srv, g.ticket, NULL));
	CU_ASSERT_EQUAL(slot_state(&srv, 0),
			(((w >> MP_CHSEG_GEN_SHIFT) + 1) << MP_CHSEG_GEN_SHIFT) |
				MP_CHSEG_ST_FREE);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->pid, 0);

	/* By the reaper's own schedule: unchanged for reap_ns. */
	pid = parking_client(name, &srv);
	CU_ASSERT_FATAL(pid > 0);
	mp_test_kill(pid);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 0); /* first sight */
	usleep(30000);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 1);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &g), 1);
	CU_ASSERT_EQUAL(g.kind, MP_CHSEG_GONE);
	CU_ASSERT_EQUAL(g.pid, pid);

	/* Taken over by a client in need, reaper or not. */
	pid = parking_client(name, &srv);
	CU_ASSERT_FATAL(pid > 0);
	mp_test_kill(pid);
	CU_ASSERT_FATAL(mp_chseg_open(&cl, name) == 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_loan(&cl, &r, 0), 0);
	CU_ASSERT_EQUAL(r.slot, 0);
	CU_ASSERT_EQUAL(ctl(&srv, 0)->pid, (uint32_t)getpid());
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);
	CU_ASSERT_EQUAL(mp_chseg_slots_in_use(&srv), 1);

	/* A take-over stopped before its pid store: the dead previous
	 * owner's pid, CLAIMED with WAIT.  Never blamed, and nothing for
	 * next() either. */
	w = slot_state(&srv, 0);
	__atomic_store_n(&ctl(&srv, 0)->pid, (uint32_t)pid, __ATOMIC_RELAXED);
	__atomic_store_n(&ctl(&srv, 0)->state, w | MP_CHSEG_ST_WAIT,
			 __ATOMIC_RELEASE);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 1), 0);
	usleep(30000);
	CU_ASSERT_EQUAL(mp_chseg_reap(&srv, 0), 0);
	CU_ASSERT_EQUAL(mp_chseg_next(&srv, &g), 0);
	CU_ASSERT_EQUAL(slot_state(&srv, 0), w | MP_CHSEG_ST_WAIT);
	__atomic_store_n(&ctl(&srv, 0)->pid, (uint32_t)getpid(),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&ctl(&srv, 0)->state, w, __ATOMIC_RELEASE);
	CU_ASSERT_EQUAL(mp_chseg_send(&cl, &r, T_COPY, 1, 0), 0);
	CU_ASSERT_EQUAL_FATAL(mp_chseg_next(&srv, &g), 1);
	CU_ASSERT_EQUAL(g.pid, getpid());
	CU_ASSERT_EQUAL(serve_one(&srv, &g), 0);
	CU_ASSERT_EQUAL(mp_chseg_wait(&cl, &r, mp_time_deadline(1000)), 0);
	mp_chseg_done(&cl, &r);
	mp_chseg_close(&cl);
	mp_chseg_close(&srv);
	CU_ASSERT(!shm_exists(name));
}

static const struct mp_test_case tests[] = {
	{"round trips at 0..64 KiB, copy, loan, echo", test_round_trip_sizes},
	{"zero-copy request, view and reply", test_zero_copy},
	{"four clients at once, replies match", test_many_clients},
	{"cancel/reply races: one outcome each", test_cancel_races},
	{"client times out, late reply discarded", test_timeout_late_reply},
	{"timeouts racing replies: one outcome each",
	 test_cancel_reply_race_stress},
	{"client killed holding a slot", test_client_killed},
	{"reaper spares a live client showing pid 0", test_reap_spares_pid0},
	{"forced reaps racing live clients' round trips",
	 test_reap_race_stress},
	{"server killed while clients wait", test_server_killed},
	{"server closes while a client waits", test_server_closes},
	{"server's creating thread exits", test_creator_thread_exits},
	{"buffered messages through a lane", test_buffered},
	{"buffered messages through the ring (no lanes)", test_buffered_ring},
	{"corrupt ring record", test_buffered_corrupt},
	{"corrupt lane record: broken, owner moves to the ring, lane reused",
	 test_lane_corrupt},
	{"lane taken: ring, then the lane once the ring holds none of ours",
	 test_lane_switch_order},
	{"lane owner killed: its messages delivered, then the lane freed",
	 test_lane_dead_owner},
	{"lane owner killed at random points of a stream: a gap-free prefix, "
	 "intact, lane freed",
	 test_lane_killed_midstream},
	{"four senders, two lanes, two threads: all in order",
	 test_lanes_many_senders},
	{"scribbled slots and header", test_scribbles},
	{"random scribbles", test_random_scribbles},
	{"credentials", test_credentials},
	{"doorbell: kick, deadline, ring", test_doorbell},
	{"no wake-up lost: a sleeping server gets every buffered message "
	 "(plain publications, server fences)",
	 test_buffered_trickle_fenced},
	{"no wake-up lost: clients without membarrier (locked publications)",
	 test_buffered_trickle_clients_unfenced},
	{"no wake-up lost: server without membarrier (no fence promised, "
	 "locked publications, sleep in slices)",
	 test_buffered_trickle_server_unfenced},
	{"open errors", test_open_errors},
	{"slot exhaustion and free-slot wake-up", test_slot_exhaustion},
	{"parked slot re-used, taken over while its owner is idle, owner "
	 "comes back",
	 test_parked_take_over},
	{"parked slot of a dead client reclaimed", test_parked_dead_client},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_chseg", 120);
	return mp_test_main("chseg", tests);
}
