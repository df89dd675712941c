/*
 * test_api_async — asynchronous requests (messip_send_async and friends)
 * and cancellation, with real processes and a real manager.
 *
 * One table of cases, each run three times by the same code: on the
 * same-host shared-memory path, on TCP (MESSIP_NO_SHM=1 in every
 * process), and on the in-process path (the server is a thread of the
 * test program): waits and their timeouts, replies in reverse order, 64
 * requests outstanding, return to sender, cancel before and after the
 * server received the request and racing its reply (every request has
 * exactly one outcome), a synchronous send that times out, the server
 * killed with requests outstanding (ESRCH for each; in-process: its
 * thread ends), a classic server (never MESSIP_MSG_CANCELED) beside one
 * that opted in, a client handle closed with requests outstanding.  One
 * case is the in-process path's own: a client thread that ends with
 * requests outstanding (withdrawn, MESSIP_MSG_DISMISSED for it).
 *
 * The server (one forked process, or thread, per case) checks what the
 * client cannot see: every request of the client arrives in the order it
 * was posted (the first 4 bytes of each are a growing sequence number), a
 * MESSIP_MSG_CANCELED names an index it holds, reported once, and every
 * reply succeeds (or fails with ESRCH: the client is gone, counted).  It
 * sends its counts back in the reply to T_QUIT.
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>

#include "test_api_util.h"

#define T_ECHO	1 /* reply at once: answer = seq, data echoed */
#define T_HOLD	2 /* held until T_FLUSH */
#define T_RACE	3 /* replied 0-2 ms after receipt */
#define T_BLOCK 4 /* the server sleeps 300 ms, then replies */
#define T_FLUSH 5 /* reply the held ones, newest first; answer = count */
#define T_EVENT 6 /* answer = DISCONNECTs + 100 * DISMISSEDs seen */
#define T_EXIT	7 /* in-process: the server thread ends holding all */
#define T_QUIT	9 /* answer 0, data: struct stats; the server ends */
#define MAXHELD 256

enum path { P_SHM, P_TCP, P_INPROC };

static enum path cur;
static int32_t seq; /* the client's next sequence number */

struct stats {
	int32_t received;  /* requests received (QUIT included) */
	int32_t canceled;  /* MESSIP_MSG_CANCELED reports */
	int32_t bad;	   /* violated checks */
	int32_t last_line; /* source line of the last violation */
	int32_t gone;	   /* replies that failed with ESRCH */
	int32_t events;	   /* DISCONNECT + 100 * DISMISSED */
};

struct srv_arg {
	char name[48];
	int opt; /* MESSIP_OPT_CANCELED */
	struct api_gate ready;
	messip_cnx_t *cnx; /* the server's (in-process: for T_EXIT) */
};

struct held {
	int index;
	int32_t seq;
	int64_t due; /* ms; 0: until T_FLUSH */
	bool told;   /* reported canceled */
};

#define SRV_BAD(st)                                                            \
	do {                                                                   \
		(st)->bad++;                                                   \
		(st)->last_line = __LINE__;                                    \
	} while (0)

/* CHILD_CHECK for the server: a thread of the test program (in-process)
 * ends the program through exit(), so that its manager is stopped. */
#define SRV_CHECK(cond)                                                        \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: server: check failed: %s\n",   \
				__FILE__, __LINE__, #cond);                    \
			if (cur == P_INPROC)                                   \
				exit(1);                                       \
			_exit(1);                                              \
		}                                                              \
	} while (0)

static int want(void)
{
	return cur == P_SHM   ? MESSIP_PATH_SHM
	       : cur == P_TCP ? MESSIP_PATH_TCP
			      : MESSIP_PATH_INPROC;
}

/* The server's own generator (mp_test_rand is the client thread's). */
static unsigned srv_rand(unsigned *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static int32_t seq_of(const void *buf, int len)
{
	int32_t v = -1;

	if (len >= 4)
		memcpy(&v, buf, 4);
	return v;
}

/* A reply that fails with ESRCH: the client is gone (counted). */
static void reply_check(int r, struct stats *st)
{
	if (r == -1 && errno == ESRCH)
		st->gone++;
	else if (r != 0)
		SRV_BAD(st);
}

static void reply_held(messip_channel_t *ch, struct held *h, struct stats *st)
{
	reply_check(messip_reply(ch, h->index, h->seq, &h->seq, 4, 2000), st);
}

static void server(void *p)
{
	struct srv_arg *a = p;
	static char buf[MESSIP_MAX_MSGLEN];
	static struct held held[MAXHELD];
	struct stats st = {0, 0, 0, 0, 0, 0};
	int nheld = 0;
	int32_t last = -1;
	unsigned rnd = 2463534242u;
	messip_cnx_t *cnx = api_connect("asrv");
	messip_channel_t *ch;

	SRV_CHECK(cnx);
	a->cnx = cnx;
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	SRV_CHECK(ch);
	SRV_CHECK(messip_channel_path(ch) ==
		  (cur == P_TCP ? MESSIP_PATH_TCP : MESSIP_PATH_SHM));
	SRV_CHECK(messip_channel_option(ch, MESSIP_OPT_CANCELED, a->opt) == 0);
	SRV_CHECK(messip_channel_option(ch, 99, 1) == -1 && errno == EINVAL);
	SRV_CHECK(messip_channel_option(ch, MESSIP_OPT_GATHER, 1) == -1 &&
		  errno == EINVAL);
	api_gate_signal(&a->ready);
	for (;;) {
		int64_t now = api_now_ms(), next = now + 50;
		int32_t type = 0, s;
		int r, wait;

		/* Replies that are due. */
		for (int i = 0; i < nheld; i++) {
			if (held[i].due && held[i].due <= now) {
				reply_held(ch, &held[i], &st);
				held[i--] = held[--nheld];
			} else if (held[i].due && held[i].due < next) {
				next = held[i].due;
			}
		}
		wait = (int)(next - now);
		r = messip_receive(ch, &type, buf, sizeof(buf),
				   wait > 0 ? wait : 0);
		if (r == MESSIP_MSG_TIMEOUT)
			continue;
		SRV_CHECK(r != -1);
		if (r == MESSIP_MSG_CANCELED) {
			int i;

			if (!a->opt)
				SRV_BAD(&st);
			for (i = 0; i < nheld && held[i].index != type; i++)
				;
			if (i == nheld || held[i].told)
				SRV_BAD(&st);
			else
				held[i].told = true;
			st.canceled++;
			continue;
		}
		if (r == MESSIP_MSG_DISCONNECT)
			st.events++;
		if (r == MESSIP_MSG_DISMISSED)
			st.events += 100;
		if (r < 0)
			continue; /* DISCONNECT, DISMISSED */
		st.received++;
		s = seq_of(buf, ch->datalenr);
		if (s <= last)
			SRV_BAD(&st); /* out of posting order */
		last = s;
		switch (type) {
		case T_HOLD:
		case T_RACE:
			SRV_CHECK(nheld < MAXHELD);
			held[nheld].index = r;
			held[nheld].seq = s;
			held[nheld].told = false;
			held[nheld].due =
				type == T_HOLD
					? 0
					: api_now_ms() + srv_rand(&rnd) % 3;
			nheld++;
			break;
		case T_BLOCK:
			api_sleep_ms(300);
			/* fall through */
		case T_ECHO:
			reply_check(
				messip_reply(ch, r, s, buf, ch->datalenr, 2000),
				&st);
			break;
		case T_EVENT:
			if (messip_reply(ch, r, st.events, NULL, 0, 2000) != 0)
				SRV_BAD(&st);
			break;
		case T_EXIT:
			/* Held requests and this one fail with ESRCH. */
			pthread_exit(NULL);
		case T_FLUSH: {
			int n = 0;

			for (int i = nheld - 1; i >= 0; i--) {
				if (held[i].due)
					continue;
				reply_held(ch, &held[i], &st);
				held[i] = held[--nheld];
				n++;
			}
			if (messip_reply(ch, r, n, NULL, 0, 2000) != 0)
				SRV_BAD(&st);
			break;
		}
		case T_QUIT:
			for (int i = 0; i < nheld; i++)
				reply_held(ch, &held[i], &st);
			SRV_CHECK(messip_reply(ch, r, 0, &st, sizeof(st),
					       2000) == 0);
			messip_disconnect(cnx, 2000);
			return;
		default:
			SRV_BAD(&st);
			messip_reply(ch, r, -1, NULL, 0, 2000);
			break;
		}
	}
}

/* ---- client side helpers ------------------------------------------------- */

struct fixture {
	struct srv_arg a;
	pid_t pid;     /* the server's process, or */
	pthread_t thr; /* in-process: its thread */
	messip_cnx_t *cnx;
	messip_channel_t *ch;
};

static void *server_thread(void *p)
{
	server(p);
	return NULL;
}

static void start(struct fixture *f, const char *tag, int opt)
{
	static const char *const names[] = {"shm", "tcp", "inp"};

	memset(f, 0, sizeof(*f));
	snprintf(f->a.name, sizeof(f->a.name), "as-%s-%s-%d", tag, names[cur],
		 opt);
	f->a.opt = opt;
	api_gate_init(&f->a.ready);
	if (cur == P_INPROC) {
		CU_ASSERT_FATAL(pthread_create(&f->thr, NULL, server_thread,
					       &f->a) == 0);
	} else {
		f->pid = api_fork(server, &f->a);
	}
	CU_ASSERT_FATAL(api_gate_wait(&f->a.ready, 10000));
	f->cnx = api_connect("acli");
	CU_ASSERT_FATAL(f->cnx != NULL);
	f->ch = messip_channel_connect(f->cnx, f->a.name, 5000);
	CU_ASSERT_FATAL(f->ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(f->ch), want());
	seq = 0;
}

/* A request of type with sequence number (and len bytes, >= 4). */
static messip_request_t *post(struct fixture *f, int32_t type, int len,
			      int32_t *s)
{
	char buf[256];

	*s = seq++;
	memset(buf, (int)(*s & 0x7f), sizeof(buf));
	memcpy(buf, s, 4);
	return messip_send_async(f->ch, type, buf, len, 5000);
}

static void post_n(struct fixture *f, int32_t type, int len,
		   messip_request_t **rq, int32_t *s, int n)
{
	for (int i = 0; i < n; i++) {
		rq[i] = post(f, type, len, &s[i]);
		CU_ASSERT_FATAL(rq[i] != NULL);
	}
}

/* Wait for rq: its answer is s, its reply the len bytes it was sent. */
static void collect(struct fixture *f, messip_request_t *rq, int32_t s, int len)
{
	char in[256];
	int32_t answer = -1;

	CU_ASSERT_EQUAL(messip_request_wait(rq, &answer, in, sizeof(in), 5000),
			0);
	CU_ASSERT_EQUAL(answer, s);
	CU_ASSERT_EQUAL(f->ch->datalen, len);
	CU_ASSERT_EQUAL(seq_of(in, f->ch->datalenr), s);
}

static int32_t sync_send(struct fixture *f, int32_t type)
{
	int32_t s = seq++, answer = -1;

	CU_ASSERT_EQUAL(messip_send(f->ch, type, &s, 4, &answer, NULL, 0, 5000),
			0);
	return answer;
}

/* The server has ended (its process or thread): true if it went well. */
static bool server_ended(struct fixture *f)
{
	if (cur == P_INPROC)
		return pthread_join(f->thr, NULL) == 0;
	return api_child_ok(f->pid, 10000);
}

/* End the server; its counts. */
static struct stats finish(struct fixture *f)
{
	struct stats st = {-1, -1, -1, 0, -1, -1};
	int32_t s = seq++, answer = -1;

	CU_ASSERT_EQUAL(messip_send(f->ch, T_QUIT, &s, 4, &answer, &st,
				    sizeof(st), 5000),
			0);
	CU_ASSERT_EQUAL(st.bad, 0);
	if (st.bad)
		fprintf(stderr, "server: %d bad, last at line %d\n", st.bad,
			st.last_line);
	CU_ASSERT(server_ended(f));
	messip_disconnect(f->cnx, 2000);
	api_gate_close(&f->a.ready);
	return st;
}

/* ---- cases --------------------------------------------------------------- */

/* Post, wait, check; a wait that times out leaves the request. */
static void case_wait(void)
{
	struct fixture f;
	messip_request_t *rq, *held;
	char in[256];
	int32_t s, sh, answer = -1;
	int64_t t0;

	start(&f, "wait", 0);
	rq = post(&f, T_ECHO, 100, &s);
	CU_ASSERT_FATAL(rq != NULL);
	memset(in, 0, sizeof(in));
	CU_ASSERT_EQUAL(messip_request_wait(rq, &answer, in, sizeof(in), 5000),
			0);
	CU_ASSERT_EQUAL(answer, s);
	CU_ASSERT_EQUAL(f.ch->datalen, 100);
	CU_ASSERT_EQUAL(seq_of(in, 100), s);
	CU_ASSERT_EQUAL((unsigned char)in[99], (unsigned)(s & 0x7f));

	/* A reply cut to the buffer, and dynamic mode. */
	rq = post(&f, T_ECHO, 200, &s);
	CU_ASSERT_EQUAL(messip_request_wait(rq, &answer, in, 10, 5000), 0);
	CU_ASSERT_EQUAL(f.ch->datalen, 200);
	CU_ASSERT_EQUAL(f.ch->datalenr, 10);
	rq = post(&f, T_ECHO, 150, &s);
	{
		void *dyn = NULL;

		CU_ASSERT_EQUAL(messip_request_wait(rq, &answer, &dyn, 0, 5000),
				0);
		CU_ASSERT_FATAL(dyn != NULL);
		CU_ASSERT_EQUAL(seq_of(dyn, 150), s);
		free(dyn);
	}

	/* Timeouts: the request stays outstanding. */
	held = post(&f, T_HOLD, 4, &sh);
	CU_ASSERT_FATAL(held != NULL);
	t0 = api_now_ms();
	CU_ASSERT_EQUAL(messip_request_wait(held, &answer, in, sizeof(in), 100),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT(api_now_ms() - t0 >= 90);
	CU_ASSERT(api_now_ms() - t0 < 2000);
	CU_ASSERT_EQUAL(messip_request_wait(held, &answer, in, sizeof(in), 0),
			MESSIP_MSG_TIMEOUT);
	/* Other traffic meanwhile (its reply comes after ours is held). */
	rq = post(&f, T_ECHO, 4, &s);
	CU_ASSERT_EQUAL(messip_request_wait(rq, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(answer, s);
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), 1);
	/* Its reply was read by the FLUSH's wait and kept for it. */
	CU_ASSERT_EQUAL(messip_request_wait(held, &answer, in, sizeof(in), 0),
			0);
	CU_ASSERT_EQUAL(answer, sh);

	/* Bad arguments. */
	CU_ASSERT_PTR_NULL(messip_send_async(NULL, 1, NULL, 0, 100));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(messip_send_async(f.ch, 1, NULL, 5, 100));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(
		messip_send_async(f.ch, 1, in, MESSIP_MAX_MSGLEN + 1, 100));
	CU_ASSERT_EQUAL(errno, EMSGSIZE);
	CU_ASSERT_EQUAL(messip_request_wait(NULL, NULL, NULL, 0, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_request_cancel(NULL), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	finish(&f);
}

/* The server replies in reverse order; each reply finds its request. */
static void case_reverse(void)
{
	enum { N = 10 };
	struct fixture f;
	messip_request_t *rq[N];
	int32_t s[N];

	start(&f, "rev", 0);
	post_n(&f, T_HOLD, 4, rq, s, N);
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), N);
	for (int i = 0; i < N; i++)
		collect(&f, rq[i], s[i], 4);
	CU_ASSERT_EQUAL(finish(&f).received, N + 2);
}

/* 64 outstanding at once, collected newest first; the second round with
 * the posts gathered (MESSIP_OPT_GATHER), the third without again. */
static void case_64(void)
{
	enum { N = 64 };
	struct fixture f;
	messip_request_t *rq[N];
	int32_t s[N];

	start(&f, "64", 0);
	CU_ASSERT_EQUAL(messip_channel_option(f.ch, MESSIP_OPT_CANCELED, 1),
			-1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	for (int round = 0; round < 3; round++) {
		CU_ASSERT_EQUAL(messip_channel_option(f.ch, MESSIP_OPT_GATHER,
						      round == 1),
				round == 2);
		post_n(&f, T_ECHO, 64, rq, s, N);
		for (int i = N - 1; i >= 0; i--)
			collect(&f, rq[i], s[i], 64);
	}
	CU_ASSERT_EQUAL(finish(&f).received, 3 * N + 1);
}

/* Replies delivered on the client's own channel. */
static void case_return_to_sender(void)
{
	enum { N = 8 };
	struct fixture f;
	messip_channel_t *mine;
	messip_request_t *rq[N];
	bool seen[N];
	char name[48], in[64];
	int32_t s[N], type;

	start(&f, "r2s", 0);
	snprintf(name, sizeof(name), "as-mine-%ld-%d", (long)getpid(), cur);
	mine = messip_channel_create(f.cnx, name, 5000, 0);
	CU_ASSERT_FATAL(mine != NULL);
	/* Gathered posts are written by the receive on reply_to too. */
	messip_channel_option(f.ch, MESSIP_OPT_GATHER, 1);
	{
		int32_t v = seq++, type2 = -1;
		messip_request_t *e = messip_send_async_to(f.ch, T_ECHO, &v, 4,
							   mine, NULL, 5000);

		CU_ASSERT_FATAL(e != NULL);
		CU_ASSERT_EQUAL(
			messip_receive(mine, &type2, in, sizeof(in), 5000),
			MESSIP_MSG_REPLY);
		CU_ASSERT_EQUAL(type2, v);
		CU_ASSERT_PTR_EQUAL(messip_reply_request(mine, NULL, NULL), e);
	}
	messip_channel_option(f.ch, MESSIP_OPT_GATHER, 0);
	/* reply_to must be a server channel of the same connection. */
	CU_ASSERT_PTR_NULL(
		messip_send_async_to(f.ch, T_ECHO, &s[0], 4, f.ch, NULL, 100));
	CU_ASSERT_EQUAL(errno, EINVAL);
	for (int i = 0; i < N; i++) {
		int32_t v = s[i] = seq++;

		rq[i] = messip_send_async_to(f.ch, T_HOLD, &v, 4, mine,
					     (void *)(intptr_t)(i + 1), 5000);
		CU_ASSERT_FATAL(rq[i] != NULL);
		CU_ASSERT_EQUAL(messip_request_cookie(rq[i]),
				(void *)(intptr_t)(i + 1));
		seen[i] = false;
	}
	/* Not waitable; one withdrawn before its reply. */
	CU_ASSERT_EQUAL(messip_request_wait(rq[0], NULL, NULL, 0, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_request_cancel(rq[3]), 0);
	{
		/* The server may have received it before the withdrawal
		 * (then its reply is dropped) or not. */
		int32_t n = sync_send(&f, T_FLUSH);

		CU_ASSERT(n == N - 1 || n == N);
	}
	for (int k = 0; k < N - 1; k++) {
		void *cookie = NULL;
		int status = -1, i;
		messip_request_t *which;
		int r = messip_receive(mine, &type, in, sizeof(in), 5000);

		CU_ASSERT_EQUAL_FATAL(r, MESSIP_MSG_REPLY);
		which = messip_reply_request(mine, &cookie, &status);
		CU_ASSERT_FATAL(which != NULL);
		CU_ASSERT_EQUAL(status, 0);
		i = (int)(intptr_t)cookie - 1;
		CU_ASSERT_FATAL(i >= 0 && i < N && i != 3);
		CU_ASSERT_PTR_EQUAL(which, rq[i]);
		CU_ASSERT(!seen[i]);
		seen[i] = true;
		CU_ASSERT_EQUAL(type, s[i]);
		CU_ASSERT_EQUAL(mine->datalen, 4);
		CU_ASSERT_EQUAL(seq_of(in, 4), s[i]);
	}
	CU_ASSERT_EQUAL(messip_receive(mine, &type, in, sizeof(in), 200),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_PTR_NULL(messip_reply_request(mine, NULL, NULL));
	CU_ASSERT_EQUAL(messip_channel_delete(mine, 2000), 0);
	finish(&f);
}

/* Withdrawn while the server is busy: it never receives it. */
static void case_cancel_before_receive(void)
{
	struct fixture f;
	messip_request_t *busy, *rq;
	int32_t s, sb, answer;
	struct stats st;

	start(&f, "cbr", 1);
	busy = post(&f, T_BLOCK, 4, &sb);
	CU_ASSERT_FATAL(busy != NULL);
	api_sleep_ms(50); /* the server now sleeps in T_BLOCK */
	rq = post(&f, T_HOLD, 4, &s);
	CU_ASSERT_FATAL(rq != NULL);
	CU_ASSERT_EQUAL(messip_request_cancel(rq), 0);
	CU_ASSERT_EQUAL(messip_request_wait(busy, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(answer, sb);
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), 0); /* nothing held */
	st = finish(&f);
	CU_ASSERT_EQUAL(st.received, 3); /* BLOCK, FLUSH, QUIT */
	CU_ASSERT_EQUAL(st.canceled, 0);
}

/* Withdrawn after the server received it: opted in, it is told. */
static void cancel_after(int opt)
{
	struct fixture f;
	messip_request_t *rq, *echo;
	int32_t s, answer;
	struct stats st;

	start(&f, "car", opt);
	rq = post(&f, T_HOLD, 4, &s);
	CU_ASSERT_FATAL(rq != NULL);
	/* Requests are received in order: once this is answered, the
	 * held one was received. */
	echo = post(&f, T_ECHO, 4, &s);
	CU_ASSERT_EQUAL(messip_request_wait(echo, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(messip_request_cancel(rq), 0);
	api_sleep_ms(150); /* the server's receive reports it */
	/* Its reply is made, and dropped. */
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), 1);

	/* A synchronous send that times out withdraws the same way. */
	s = seq++;
	CU_ASSERT_EQUAL(messip_send(f.ch, T_HOLD, &s, 4, &answer, NULL, 0, 100),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	api_sleep_ms(150);
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), 1);
	st = finish(&f);
	CU_ASSERT_EQUAL(st.canceled, opt ? 2 : 0);
}

static void case_cancel_after_receive(void)
{
	cancel_after(1);
}

static void case_cancel_classic(void)
{
	cancel_after(0);
}

/* Cancel racing the reply: each request has exactly one outcome. */
static void race(int opt)
{
	enum { N = 300 };
	struct fixture f;
	int withdrawn = 0, collected = 0;
	struct stats st;

	start(&f, "race", opt);
	for (int i = 0; i < N; i++) {
		int32_t s, answer = -1;
		messip_request_t *rq = post(&f, T_RACE, 4, &s);
		struct timespec ts = {0, (long)(mp_test_rand() % 2500) * 1000};
		int r;

		CU_ASSERT_FATAL(rq != NULL);
		nanosleep(&ts, NULL);
		r = messip_request_cancel(rq);
		CU_ASSERT(r == 0 || r == 1);
		if (r == 1) {
			CU_ASSERT_EQUAL(
				messip_request_wait(rq, &answer, NULL, 0, 5000),
				0);
			CU_ASSERT_EQUAL(answer, s);
			collected++;
		} else {
			withdrawn++;
		}
	}
	api_sleep_ms(100);
	st = finish(&f);
	CU_ASSERT_EQUAL(withdrawn + collected, N);
	/* Each report is of a withdrawn request that the server held. */
	CU_ASSERT(st.canceled <= withdrawn);
	CU_ASSERT(st.received - 1 >= collected + st.canceled);
	if (!opt)
		CU_ASSERT_EQUAL(st.canceled, 0);
	if (getenv("MP_TEST_VERBOSE"))
		fprintf(stderr, "race: %d collected, %d withdrawn, %d told\n",
			collected, withdrawn, st.canceled);
}

static void case_race_opt(void)
{
	race(1);
}

static void case_race_classic(void)
{
	race(0);
}

/* The server dies with requests outstanding: ESRCH for each. */
static void case_server_killed(void)
{
	enum { N = 5 };
	struct fixture f;
	messip_request_t *rq[N];
	int32_t s, answer;
	int64_t t0;

	start(&f, "kill", 0);
	for (int i = 0; i < N; i++) {
		rq[i] = post(&f, T_HOLD, 4, &s);
		CU_ASSERT_FATAL(rq[i] != NULL);
	}
	/* Once this is answered the server holds them all. */
	{
		messip_request_t *e = post(&f, T_ECHO, 4, &s);

		CU_ASSERT_EQUAL(messip_request_wait(e, &answer, NULL, 0, 5000),
				0);
	}
	if (cur == P_INPROC) {
		/* The server thread ends holding them all (and this). */
		s = seq++;
		CU_ASSERT_EQUAL(messip_send(f.ch, T_EXIT, &s, 4, &answer, NULL,
					    0, 5000),
				-1);
		CU_ASSERT_EQUAL(errno, ESRCH);
		CU_ASSERT(server_ended(&f));
	} else {
		kill(f.pid, SIGKILL);
		CU_ASSERT_NOT_EQUAL(mp_test_wait(f.pid, 5000), -1);
	}
	t0 = api_now_ms();
	for (int i = 0; i < N; i++) {
		CU_ASSERT_EQUAL(
			messip_request_wait(rq[i], &answer, NULL, 0, 5000), -1);
		CU_ASSERT_EQUAL(errno, ESRCH);
	}
	CU_ASSERT(api_now_ms() - t0 < 1000);
	/* In-process, the channel lives on with no thread serving it
	 * until its connection ends (this thread takes it over). */
	if (cur == P_INPROC)
		CU_ASSERT_EQUAL(messip_disconnect(f.a.cnx, 2000), 0);
	CU_ASSERT_PTR_NULL(messip_send_async(f.ch, T_ECHO, &s, 4, 1000));
	CU_ASSERT_EQUAL(errno, ESRCH);
	messip_disconnect(f.cnx, 2000);
	api_gate_close(&f.a.ready);
}

/* Ask the server for the events it saw until `want` of them: true if
 * they came within 5 s.  *asked counts the requests it took. */
static bool events_reach(struct fixture *f, int32_t want, int *asked)
{
	int64_t end = api_now_ms() + 5000;
	int32_t n = -1;

	do {
		if (n >= 0)
			api_sleep_ms(10);
		n = sync_send(f, T_EVENT);
		(*asked)++;
	} while (n < want && api_now_ms() < end);
	return n == want;
}

/* The client handle is closed with requests outstanding: they are
 * withdrawn (the ones not received never are), the server is told the
 * client disconnected, and its replies to the held ones are dropped. */
static void case_close_outstanding(void)
{
	enum { N = 3 };
	struct fixture f;
	messip_request_t *rq[N], *e;
	int32_t s[N], se, answer;
	struct stats st;
	int asked = 0;

	start(&f, "close", 0);
	post_n(&f, T_HOLD, 4, rq, s, N);
	e = post(&f, T_ECHO, 4, &se);
	CU_ASSERT_FATAL(e != NULL);
	CU_ASSERT_EQUAL(messip_request_wait(e, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(messip_channel_disconnect(f.ch, 2000), MESSIP_OK);
	f.ch = messip_channel_connect(f.cnx, f.a.name, 5000);
	CU_ASSERT_FATAL(f.ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(f.ch), want());
	/* One DISCONNECT, no DISMISSED. */
	CU_ASSERT(events_reach(&f, 1, &asked));
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), N);
	st = finish(&f);
	CU_ASSERT_EQUAL(st.received, N + 1 + asked + 1 + 1);
	if (cur != P_TCP) /* over TCP a reply may meet the closed link */
		CU_ASSERT_EQUAL(st.gone, 0);
}

/* In-process only: a client thread ends with requests outstanding.  They
 * are withdrawn (held ones reported canceled, queued ones never
 * received), the server gets one MESSIP_MSG_DISMISSED for the client and
 * ESRCH for its replies, and a thread that takes the handle over gets
 * ESRCH from each.  (On the other paths a thread's end changes nothing.)
 */
struct exiter {
	struct fixture *f;
	messip_request_t *rq[8];
	int n;
};

static void *exiter_thread(void *p)
{
	struct exiter *x = p;
	messip_request_t *e;
	int32_t s, answer = -1;

	for (int i = 0; i < 3; i++)
		x->rq[x->n++] = post(x->f, T_HOLD, 4, &s);
	e = post(x->f, T_ECHO, 4, &s);
	if (messip_request_wait(e, &answer, NULL, 0, 5000) != 0 || answer != s)
		return NULL; /* n stays 3: the main thread sees it */
	x->rq[x->n++] = post(x->f, T_BLOCK, 4, &s);
	api_sleep_ms(50); /* the server sleeps in T_BLOCK */
	x->rq[x->n++] = post(x->f, T_HOLD, 4, &s);
	x->rq[x->n++] = post(x->f, T_HOLD, 4, &s);
	return NULL; /* ends with all six outstanding */
}

static void case_thread_exit(void)
{
	struct fixture f;
	struct exiter x = {&f, {NULL}, 0};
	pthread_t t;
	int32_t answer;
	struct stats st;
	int asked = 0;

	start(&f, "texit", 1);
	CU_ASSERT_FATAL(pthread_create(&t, NULL, exiter_thread, &x) == 0);
	CU_ASSERT_FATAL(pthread_join(t, NULL) == 0);
	CU_ASSERT_EQUAL_FATAL(x.n, 6);
	for (int i = 0; i < x.n; i++)
		CU_ASSERT_FATAL(x.rq[i] != NULL);
	/* Taken over by this thread: each has its outcome, ESRCH. */
	CU_ASSERT_EQUAL(messip_request_cancel(x.rq[0]), 1);
	for (int i = 0; i < x.n; i++) {
		CU_ASSERT_EQUAL(
			messip_request_wait(x.rq[i], &answer, NULL, 0, 0), -1);
		CU_ASSERT_EQUAL(errno, ESRCH);
	}
	CU_ASSERT(events_reach(&f, 100, &asked));   /* one DISMISSED */
	CU_ASSERT_EQUAL(sync_send(&f, T_FLUSH), 3); /* the three held */
	/* The handle serves on. */
	CU_ASSERT_EQUAL(sync_send(&f, T_ECHO), seq - 1);
	st = finish(&f);
	/* 3 HOLD, ECHO, BLOCK (unless withdrawn before the server took it:
	 * then its reply did not fail), the EVENT polls, FLUSH, ECHO, QUIT;
	 * the last two HOLDs never. */
	CU_ASSERT_EQUAL(st.received, 3 + 1 + (st.gone - 3) + asked + 3);
	CU_ASSERT(st.gone == 3 || st.gone == 4);
	CU_ASSERT_EQUAL(st.canceled, 3);
	CU_ASSERT_EQUAL(st.events, 100);
}

/* ---- the table, run on every path ---------------------------------------- */

#define BOTH(fn)                                                               \
	static void fn##_shm(void)                                             \
	{                                                                      \
		cur = P_SHM;                                                   \
		unsetenv("MESSIP_NO_SHM");                                     \
		fn();                                                          \
	}                                                                      \
	static void fn##_tcp(void)                                             \
	{                                                                      \
		cur = P_TCP;                                                   \
		setenv("MESSIP_NO_SHM", "1", 1);                               \
		fn();                                                          \
		unsetenv("MESSIP_NO_SHM");                                     \
	}                                                                      \
	static void fn##_inproc(void)                                          \
	{                                                                      \
		cur = P_INPROC;                                                \
		unsetenv("MESSIP_NO_SHM");                                     \
		fn();                                                          \
	}

BOTH(case_wait)
BOTH(case_reverse)
BOTH(case_64)
BOTH(case_return_to_sender)
BOTH(case_cancel_before_receive)
BOTH(case_cancel_after_receive)
BOTH(case_cancel_classic)
BOTH(case_race_opt)
BOTH(case_race_classic)
BOTH(case_server_killed)
BOTH(case_close_outstanding)

static void case_thread_exit_inproc(void)
{
	cur = P_INPROC;
	unsetenv("MESSIP_NO_SHM");
	case_thread_exit();
}

#define ROW(fn, what)                                                          \
	{"shm: " what, fn##_shm}, {"tcp: " what, fn##_tcp},                    \
	{                                                                      \
		"inproc: " what, fn##_inproc                                   \
	}

static const struct mp_test_case tests[] = {
	ROW(case_wait, "wait, truncation, dynamic mode, timeouts, bad args"),
	ROW(case_reverse, "replies in reverse order"),
	ROW(case_64, "64 requests outstanding"),
	ROW(case_return_to_sender, "return to sender (MESSIP_MSG_REPLY)"),
	ROW(case_cancel_before_receive, "cancel before the server receives"),
	ROW(case_cancel_after_receive,
	    "cancel after receive, send timeout: CANCELED (opted in)"),
	ROW(case_cancel_classic, "cancel after receive: classic server"),
	ROW(case_race_opt, "cancel racing the reply: one outcome (opted in)"),
	ROW(case_race_classic, "cancel racing the reply: classic server"),
	ROW(case_server_killed, "server killed: ESRCH for each request"),
	ROW(case_close_outstanding, "handle closed with requests outstanding"),
	{"inproc: client thread ends with requests outstanding: DISMISSED",
	 case_thread_exit_inproc},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_async", 120);
	api_verbose();
	unsetenv("MESSIP_NO_SHM");
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_async", tests);
	api_stop_mgr();
	return rc;
}
