/*
 * test_api_inproc — the in-process path: a client and a server that are
 * threads of one process, each with its own connection to a real
 * manager, exchange messages through the server's mailbox.
 *
 *   - the path is reported as MESSIP_PATH_INPROC (and MESSIP_NO_INPROC
 *     turns it off);
 *   - sizes 0..64 KiB, truncation, dynamic mode, vectors, receive_allmsg,
 *     remote_id, credentials;
 *   - 16 client threads x 10,000 requests to one server, every reply
 *     matching its request;
 *   - a timeout: the late reply is dropped (the next call gets its own),
 *     a request withdrawn before it was received is never delivered;
 *   - ping answered inside receive, and timing out when nobody receives;
 *   - buffered messages: order, sender, the bound (a full mailbox makes
 *     the sender wait, ETIMEDOUT means not queued), none dropped, all
 *     before the client's DISCONNECT;
 *   - the zero-copy calls copy nothing (the server's view is the client's
 *     loan, the client's reply view is the server's reply loan);
 *   - the server's connection ends while a client waits: ESRCH; a server
 *     thread exits holding requests: its clients get ESRCH;
 *   - a server in a poll() loop over messip_channel_fd.
 * Meant to pass under ThreadSanitizer and AddressSanitizer too.
 */
#include "config.h"

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>

#include "test_api_util.h"

#define T_ECHO	  1
#define T_HOLD	  2 /* kept without a reply until T_FLUSH */
#define T_FLUSH	  3
#define T_QUIT	  9
#define N_CLIENTS 16
#define N_REQS	  10000
#define BIG	  65536

static int name_seq;

static void fresh_name(char *buf, size_t n, const char *tag)
{
	snprintf(buf, n, "inproc-%s-%d-%d", tag, (int)getpid(),
		 __atomic_add_fetch(&name_seq, 1, __ATOMIC_RELAXED));
}

/* ---- an echo server thread ------------------------------------------ */

struct srv {
	char name[48];
	int32_t maxbuf;
	bool view;	   /* receive_view + reply_loan instead of copies */
	bool exit_holding; /* return from the thread with T_HOLD unreplied */
	int hold_max;	   /* T_HOLD requests to take before exiting */
	pthread_t thr;
	pthread_barrier_t ready;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int errors;
	int served;
	int nbuf;
	int32_t buf_types[64];
	char buf_ids[64][MESSIP_MAXLEN_ID + 1];
	int disconnects;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	static __thread char buf[BIG];
	int held[64], nheld = 0;

	s->cnx = api_connect("isrv");
	s->ch = s->cnx ? messip_channel_create(s->cnx, s->name, 5000, s->maxbuf)
		       : NULL;
	pthread_barrier_wait(&s->ready);
	if (!s->ch) {
		s->errors++;
		return NULL;
	}
	for (;;) {
		int32_t type = -1;
		const void *view = NULL;
		int vlen = 0, r;

		if (s->view)
			r = messip_receive_view(s->ch, &type, &view, &vlen,
						10000);
		else
			r = messip_receive(s->ch, &type, buf, sizeof(buf),
					   10000);
		if (r == MESSIP_MSG_NOREPLY) {
			if (s->nbuf < 64) {
				s->buf_types[s->nbuf] = type;
				memcpy(s->buf_ids[s->nbuf], s->ch->remote_id,
				       sizeof(s->buf_ids[0]));
			}
			s->nbuf++;
			continue;
		}
		if (r == MESSIP_MSG_DISCONNECT) {
			s->disconnects++;
			continue;
		}
		if (r < 0) {
			if (r != MESSIP_MSG_DISMISSED)
				s->errors++;
			if (r == MESSIP_MSG_TIMEOUT)
				return NULL;
			continue;
		}
		s->served++;
		if (type == T_HOLD) {
			held[nheld++] = r;
			if (s->exit_holding && nheld == s->hold_max)
				return NULL; /* with the requests held */
			continue;
		}
		if (type == T_FLUSH) {
			for (int i = 0; i < nheld; i++)
				messip_reply(s->ch, held[i], T_HOLD, NULL, 0,
					     1000);
			nheld = 0;
		}
		if (s->view) {
			/* Zero copy both ways: the reply is built in the
			 * loan; answer 1 if the request was the loan. */
			void *out = messip_reply_loan(s->ch, r, (size_t)vlen);

			if (!out || (vlen && !view)) {
				s->errors++;
				continue;
			}
			memcpy(out, view, (size_t)vlen);
			if (messip_reply_loaned(s->ch, r, type, out, vlen,
						1000) != 0)
				s->errors++;
		} else if (messip_reply(s->ch, r, type, buf, s->ch->datalenr,
					1000) != 0) {
			s->errors++;
		}
		if (type == T_QUIT)
			break;
	}
	return NULL;
}

static void srv_start(struct srv *s, const char *tag)
{
	fresh_name(s->name, sizeof(s->name), tag);
	pthread_barrier_init(&s->ready, NULL, 2);
	CU_ASSERT_FATAL(pthread_create(&s->thr, NULL, srv_main, s) == 0);
	pthread_barrier_wait(&s->ready); /* destroyed after the join */
	CU_ASSERT_FATAL(s->ch != NULL);
}

/* Stop with a T_QUIT through cli (if given), join, clean up. */
static void srv_stop(struct srv *s, messip_channel_t *cli)
{
	int32_t answer = 0;

	if (cli)
		CU_ASSERT_EQUAL(messip_send(cli, T_QUIT, "q", 1, &answer, NULL,
					    0, 5000),
				0);
	pthread_join(s->thr, NULL);
	pthread_barrier_destroy(&s->ready);
	if (s->cnx)
		messip_disconnect(s->cnx, 2000);
	CU_ASSERT_EQUAL(s->errors, 0);
}

static messip_channel_t *cli_open(messip_cnx_t **cnx, const char *name)
{
	*cnx = api_connect("icli");
	CU_ASSERT_FATAL(*cnx != NULL);
	return messip_channel_connect(*cnx, name, 5000);
}

/* ---- tests ---------------------------------------------------------- */

static void test_path_and_sizes(void)
{
	static char out[BIG], in[BIG];
	struct srv s = {0};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	static const int sizes[] = {0, 1, 64, 4096, 65535, BIG};
	int32_t answer;
	void *dyn = NULL;

	srv_start(&s, "sizes");
	ch = cli_open(&cnx, s.name);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(ch), MESSIP_PATH_INPROC);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "isrv");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int n = sizes[i];

		for (int k = 0; k < n; k++)
			out[k] = (char)(k * 7 + n);
		memset(in, 0, sizeof(in));
		answer = -1;
		CU_ASSERT_EQUAL(
			messip_send(ch, T_ECHO, out, n, &answer, in, BIG, 5000),
			0);
		CU_ASSERT_EQUAL(answer, T_ECHO);
		CU_ASSERT_EQUAL(ch->datalen, n);
		CU_ASSERT_EQUAL(ch->datalenr, n);
		CU_ASSERT(memcmp(in, out, (size_t)n) == 0);
	}
	/* Truncated reply, then the dynamic mode. */
	CU_ASSERT_EQUAL(
		messip_send(ch, T_ECHO, out, 100, &answer, in, 10, 5000), 0);
	CU_ASSERT_EQUAL(ch->datalen, 100);
	CU_ASSERT_EQUAL(ch->datalenr, 10);
	CU_ASSERT_EQUAL(
		messip_send(ch, T_ECHO, out, 300, &answer, &dyn, 0, 5000), 0);
	CU_ASSERT_FATAL(dyn != NULL);
	CU_ASSERT(memcmp(dyn, out, 300) == 0);
	free(dyn);
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 2000), 0);
	srv_stop(&s, ch);
	messip_disconnect(cnx, 2000);
}

static void test_no_inproc_env(void)
{
	struct srv s = {0};
	messip_cnx_t *cnx;
	messip_channel_t *ch;

	setenv("MESSIP_NO_INPROC", "1", 1);
	srv_start(&s, "env");
	unsetenv("MESSIP_NO_INPROC");
	ch = cli_open(&cnx, s.name);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_NOT_EQUAL(messip_channel_path(ch), MESSIP_PATH_INPROC);
	srv_stop(&s, ch);
	messip_disconnect(cnx, 2000);
}

/* A server that checks what it receives itself. */
struct chk {
	char name[48];
	pthread_barrier_t ready;
	int errors;
	int long_ok;
	int cred_ok;
};

static void *chk_main(void *arg)
{
	struct chk *k = arg;
	messip_cnx_t *cnx = api_connect("ichk");
	messip_channel_t *ch =
		cnx ? messip_channel_create(cnx, k->name, 5000, 0) : NULL;
	char small[8], a[5], b[100];
	struct iovec v[2] = {{a, sizeof(a)}, {b, sizeof(b)}};
	int32_t type;
	pid_t pid = 0;
	uid_t uid = 0;
	gid_t gid = 0;
	int r;

	pthread_barrier_wait(&k->ready);
	if (!ch) {
		k->errors++;
		return NULL;
	}
	/* A long message into a short buffer: the whole of it stays in
	 * receive_allmsg until the reply. */
	r = messip_receive(ch, &type, small, sizeof(small), 5000);
	if (r < 0 || ch->datalen != 1000 || ch->datalenr != 8)
		k->errors++;
	else if (memcmp(ch->receive_allmsg[r], "0123456789", 10) == 0)
		k->long_ok = 1;
	if (r >= 0 && messip_sender_cred(ch, r, &pid, &uid, &gid) == 0 &&
	    pid == getpid() && uid == getuid() && gid == getgid())
		k->cred_ok = 1;
	if (r >= 0) {
		struct iovec rv[3] = {{"ab", 2}, {"", 0}, {"cde", 3}};

		messip_replyv(ch, r, 5, rv, 3, 1000);
	}
	/* Vectored receive. */
	r = messip_receivev(ch, &type, v, 2, 5000);
	if (r < 0 || ch->datalenr != 19 || memcmp(a, "hello", 5) != 0 ||
	    memcmp(b, "-vectors-world", 14) != 0)
		k->errors++;
	if (r >= 0)
		messip_reply(ch, r, 6, NULL, 0, 1000);
	while ((r = messip_receive(ch, &type, NULL, 0, 5000)) !=
	       MESSIP_MSG_DISCONNECT)
		if (r == MESSIP_MSG_TIMEOUT) {
			k->errors++;
			break;
		}
	messip_channel_delete(ch, 2000);
	messip_disconnect(cnx, 2000);
	return NULL;
}

static void test_long_vectors_cred(void)
{
	struct chk k = {0};
	pthread_t t;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	char msg[1000], rep[16];
	struct iovec sv[3] = {{"hello", 5}, {"-vectors", 8}, {"-world", 6}};
	int32_t answer = 0;

	for (int i = 0; i < 1000; i++)
		msg[i] = (char)('0' + i % 10);
	fresh_name(k.name, sizeof(k.name), "chk");
	pthread_barrier_init(&k.ready, NULL, 2);
	CU_ASSERT_FATAL(pthread_create(&t, NULL, chk_main, &k) == 0);
	pthread_barrier_wait(&k.ready);
	ch = cli_open(&cnx, k.name);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(
		messip_send(ch, 1, msg, 1000, &answer, rep, sizeof(rep), 5000),
		0);
	CU_ASSERT_EQUAL(answer, 5);
	CU_ASSERT_EQUAL(ch->datalen, 5);
	CU_ASSERT(memcmp(rep, "abcde", 5) == 0);
	CU_ASSERT_EQUAL(messip_sendv(ch, 2, sv, 3, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(answer, 6);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	pthread_join(t, NULL);
	pthread_barrier_destroy(&k.ready); /* after the join: see srv_stop */
	messip_disconnect(cnx, 2000);
	CU_ASSERT_EQUAL(k.errors, 0);
	CU_ASSERT_EQUAL(k.long_ok, 1);
	CU_ASSERT_EQUAL(k.cred_ok, 1);
}

/* 16 client threads x 10,000 requests, each reply checked. */
struct many {
	const char *name;
	int idx;
	int bad;
	int done;
};

static void *many_main(void *arg)
{
	struct many *m = arg;
	messip_cnx_t *cnx = api_connect("imany");
	messip_channel_t *ch =
		cnx ? messip_channel_connect(cnx, m->name, 5000) : NULL;

	if (!ch || messip_channel_path(ch) != MESSIP_PATH_INPROC) {
		m->bad++;
		goto out;
	}
	for (int i = 0; i < N_REQS; i++) {
		uint32_t req[4] = {(uint32_t)m->idx, (uint32_t)i,
				   (uint32_t)(m->idx * 31 + i), 0xfeed};
		uint32_t rep[4] = {0};
		int32_t answer = -1;

		if (messip_send(ch, T_ECHO, req, sizeof(req), &answer, rep,
				sizeof(rep), 10000) != 0 ||
		    answer != T_ECHO || memcmp(req, rep, sizeof(req)) != 0)
			m->bad++;
		else
			m->done++;
	}
out:
	if (cnx)
		messip_disconnect(cnx, 2000);
	return NULL;
}

static void test_many_clients(void)
{
	struct srv s = {0};
	struct many m[N_CLIENTS];
	pthread_t t[N_CLIENTS];
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int64_t t0 = api_now_ms();

	srv_start(&s, "many");
	for (int i = 0; i < N_CLIENTS; i++) {
		m[i] = (struct many){s.name, i, 0, 0};
		CU_ASSERT_FATAL(pthread_create(&t[i], NULL, many_main, &m[i]) ==
				0);
	}
	for (int i = 0; i < N_CLIENTS; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(m[i].bad, 0);
		CU_ASSERT_EQUAL(m[i].done, N_REQS);
	}
	fprintf(stderr, "  [%d x %d requests in %lld ms] ", N_CLIENTS, N_REQS,
		(long long)(api_now_ms() - t0));
	ch = cli_open(&cnx, s.name);
	CU_ASSERT_FATAL(ch != NULL);
	srv_stop(&s, ch);
	CU_ASSERT_EQUAL(s.served, N_CLIENTS * N_REQS + 1);
	messip_disconnect(cnx, 2000);
}

static void test_timeout_late_reply(void)
{
	struct srv s = {0};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer = 0;
	char rep[8];

	srv_start(&s, "late");
	ch = cli_open(&cnx, s.name);
	CU_ASSERT_FATAL(ch != NULL);
	/* Held by the server: times out, withdrawn. */
	errno = 0;
	CU_ASSERT_EQUAL(messip_send(ch, T_HOLD, "h", 1, &answer, NULL, 0, 100),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	/* T_FLUSH makes the server reply to the held one first (dropped),
	 * then to this one: we get our own answer. */
	answer = 0;
	CU_ASSERT_EQUAL(messip_send(ch, T_FLUSH, "fl", 2, &answer, rep,
				    sizeof(rep), 5000),
			0);
	CU_ASSERT_EQUAL(answer, T_FLUSH);
	CU_ASSERT_EQUAL(ch->datalen, 2);
	CU_ASSERT(memcmp(rep, "fl", 2) == 0);
	srv_stop(&s, ch);
	CU_ASSERT_EQUAL(s.served, 3);
	messip_disconnect(cnx, 2000);
}

/* A server channel nobody receives on (yet): requests wait in the mailbox. */
static void test_withdrawn_and_ping(void)
{
	messip_cnx_t *scnx = api_connect("iq"), *cnx;
	char name[48];
	messip_channel_t *sch, *ch;
	int32_t answer = 0, type = 0;
	char buf[16];
	int r;

	fresh_name(name, sizeof(name), "wd");
	CU_ASSERT_FATAL(scnx != NULL);
	sch = messip_channel_create(scnx, name, 5000, 0);
	CU_ASSERT_FATAL(sch != NULL);
	ch = cli_open(&cnx, name);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(messip_channel_path(ch), MESSIP_PATH_INPROC);
	/* Nobody receives: ping and send time out, and are withdrawn. */
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 50), MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(messip_send(ch, 7, "gone", 4, &answer, NULL, 0, 50),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 8, "kept", 4, 1000), 0);
	/* The server sees the buffered message only. */
	r = messip_receive(sch, &type, buf, sizeof(buf), 1000);
	CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 8);
	CU_ASSERT_STRING_EQUAL(sch->remote_id, "icli");
	CU_ASSERT_EQUAL(messip_receive(sch, &type, buf, sizeof(buf), 100),
			MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	CU_ASSERT_EQUAL(messip_receive(sch, &type, buf, sizeof(buf), 2000),
			MESSIP_MSG_DISCONNECT);
	messip_disconnect(cnx, 2000);
	messip_disconnect(scnx, 2000);
}

struct bsend_arg {
	messip_channel_t *ch;
	int rc;
};

static void *bsend_main(void *arg)
{
	struct bsend_arg *b = arg;

	b->rc = messip_buffered_send(b->ch, 100, "late", 4, 5000);
	return NULL;
}

static void test_buffered_bound(void)
{
	messip_cnx_t *scnx = api_connect("ib"), *cnx;
	messip_channel_t *sch, *ch;
	struct bsend_arg ba;
	pthread_t t;
	char name[48], buf[16];
	int32_t type;

	fresh_name(name, sizeof(name), "buf");
	CU_ASSERT_FATAL(scnx != NULL);
	sch = messip_channel_create(scnx, name, 5000, 4);
	CU_ASSERT_FATAL(sch != NULL);
	ch = cli_open(&cnx, name);
	CU_ASSERT_FATAL(ch != NULL);
	for (int i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(messip_buffered_send(ch, i, "x", 1, 1000), i);
	/* Full: not queued. */
	errno = 0;
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 99, "x", 1, 0), -1);
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 99, "x", 1, 50), -1);
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	/* A sender waiting for room gets in once one is taken. */
	ba.ch = ch;
	ba.rc = -2;
	CU_ASSERT_FATAL(pthread_create(&t, NULL, bsend_main, &ba) == 0);
	api_sleep_ms(50);
	for (int i = 0; i < 5; i++) {
		CU_ASSERT_EQUAL(
			messip_receive(sch, &type, buf, sizeof(buf), 5000),
			MESSIP_MSG_NOREPLY);
		CU_ASSERT_EQUAL(type, i < 4 ? i : 100);
		if (i == 0)
			pthread_join(t, NULL);
	}
	CU_ASSERT_EQUAL(ba.rc, 3);
	/* Messages sent before the disconnect come before DISCONNECT. */
	for (int i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(messip_buffered_send(ch, 200 + i, "y", 1, 1000),
				i);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT_EQUAL(
			messip_receive(sch, &type, buf, sizeof(buf), 2000),
			MESSIP_MSG_NOREPLY);
		CU_ASSERT_EQUAL(type, 200 + i);
	}
	CU_ASSERT_EQUAL(messip_receive(sch, &type, buf, sizeof(buf), 2000),
			MESSIP_MSG_DISCONNECT);
	messip_disconnect(cnx, 2000);
	messip_disconnect(scnx, 2000);
}

static void test_zero_copy(void)
{
	struct srv s = {.view = true};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	const void *reply = NULL;
	int rlen = 0;
	int32_t answer = 0;
	char *loan;

	srv_start(&s, "zc");
	ch = cli_open(&cnx, s.name);
	CU_ASSERT_FATAL(ch != NULL);
	for (int round = 0; round < 3; round++) {
		loan = messip_buffer_loan(ch, 5000, 1000);
		CU_ASSERT_FATAL(loan != NULL);
		for (int i = 0; i < 5000; i++)
			loan[i] = (char)(i ^ round);
		CU_ASSERT_EQUAL(messip_send_view(ch, T_ECHO, loan, 5000,
						 &answer, &reply, &rlen, 5000),
				0);
		CU_ASSERT_EQUAL(rlen, 5000);
		CU_ASSERT_FATAL(reply != NULL);
		for (int i = 0; i < 5000; i += 499)
			CU_ASSERT_EQUAL(((const char *)reply)[i],
					(char)(i ^ round));
		CU_ASSERT_EQUAL(messip_buffer_release(ch, reply), 0);
	}
	/* A loan given back unsent; a released view is no longer one. */
	loan = messip_buffer_loan(ch, 10, 1000);
	CU_ASSERT_FATAL(loan != NULL);
	CU_ASSERT_EQUAL(messip_buffer_release(ch, loan), 0);
	CU_ASSERT_EQUAL(messip_buffer_release(ch, loan), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	/* send_loaned, reply copied into a buffer. */
	loan = messip_buffer_loan(ch, 3, 1000);
	CU_ASSERT_FATAL(loan != NULL);
	memcpy(loan, "abc", 3);
	{
		char rep[8] = {0};

		CU_ASSERT_EQUAL(messip_send_loaned(ch, T_ECHO, loan, 3, &answer,
						   rep, sizeof(rep), 5000),
				0);
		CU_ASSERT(memcmp(rep, "abc", 3) == 0);
	}
	srv_stop(&s, ch);
	messip_disconnect(cnx, 2000);
}

/* No copy: the server's view is the very loan, the client's reply view
 * the very buffer the server loaned for the reply. */
struct zc_peek {
	char name[48];
	pthread_barrier_t ready;
	const void *req_view;
	void *rep_loan;
	int errors;
};

static void *zc_peek_main(void *arg)
{
	struct zc_peek *z = arg;
	messip_cnx_t *cnx = api_connect("izc");
	messip_channel_t *ch =
		cnx ? messip_channel_create(cnx, z->name, 5000, 0) : NULL;
	const void *data = NULL;
	int len = 0, r;
	int32_t type;

	pthread_barrier_wait(&z->ready);
	if (!ch) {
		z->errors++;
		return NULL;
	}
	r = messip_receive_view(ch, &type, &data, &len, 5000);
	if (r < 0 || len != 64) {
		z->errors++;
		return NULL;
	}
	z->req_view = data;
	z->rep_loan = messip_reply_loan(ch, r, 32);
	if (!z->rep_loan) {
		z->errors++;
		return NULL;
	}
	memset(z->rep_loan, 'R', 32);
	if (messip_reply_loaned(ch, r, 1, z->rep_loan, 32, 1000) != 0)
		z->errors++;
	while (messip_receive(ch, &type, NULL, 0, 5000) !=
	       MESSIP_MSG_DISCONNECT)
		;
	messip_disconnect(cnx, 2000);
	return NULL;
}

static void test_zero_copy_identity(void)
{
	struct zc_peek z = {0};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	const void *reply = NULL;
	int rlen = 0;
	int32_t answer = 0;
	pthread_t t;
	char *loan;

	fresh_name(z.name, sizeof(z.name), "zcid");
	pthread_barrier_init(&z.ready, NULL, 2);
	CU_ASSERT_FATAL(pthread_create(&t, NULL, zc_peek_main, &z) == 0);
	pthread_barrier_wait(&z.ready);
	ch = cli_open(&cnx, z.name);
	CU_ASSERT_FATAL(ch != NULL);
	loan = messip_buffer_loan(ch, 64, 1000);
	CU_ASSERT_FATAL(loan != NULL);
	memset(loan, 'Q', 64);
	/* The server noted its pointers before it replied, and the reply
	 * is seen here only after that. */
	CU_ASSERT_EQUAL(
		messip_send_view(ch, 1, loan, 64, &answer, &reply, &rlen, 5000),
		0);
	CU_ASSERT_PTR_EQUAL(z.req_view, loan);
	CU_ASSERT_PTR_EQUAL(reply, z.rep_loan);
	CU_ASSERT_EQUAL(rlen, 32);
	CU_ASSERT(reply && ((const char *)reply)[31] == 'R');
	CU_ASSERT_EQUAL(messip_buffer_release(ch, reply), 0);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	pthread_join(t, NULL);
	pthread_barrier_destroy(&z.ready);
	messip_disconnect(cnx, 2000);
	CU_ASSERT_EQUAL(z.errors, 0);
}

struct waiter {
	messip_channel_t *ch;
	int rc;
	int err;
	int64_t ms;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	int64_t t0 = api_now_ms();
	int32_t answer;

	w->rc = messip_send(w->ch, T_HOLD, "w", 1, &answer, NULL, 0, 10000);
	w->err = errno;
	w->ms = api_now_ms() - t0;
	return NULL;
}

static void test_server_gone(void)
{
	messip_cnx_t *scnx = api_connect("igone"), *cnx;
	messip_channel_t *sch, *ch;
	messip_cnx_t *c2 = NULL;
	struct waiter w[2];
	pthread_t t[2];
	char name[48], buf[8];
	int32_t type;

	fresh_name(name, sizeof(name), "gone");
	CU_ASSERT_FATAL(scnx != NULL);
	sch = messip_channel_create(scnx, name, 5000, 0);
	CU_ASSERT_FATAL(sch != NULL);
	ch = cli_open(&cnx, name);
	CU_ASSERT_FATAL(ch != NULL);
	/* Two clients (one connection each): one request held by the
	 * server, one still queued. */
	for (int i = 0; i < 2; i++) {
		w[i].ch = i == 0 ? ch : NULL;
		if (i == 1) {
			c2 = api_connect("icli2");

			CU_ASSERT_FATAL(c2 != NULL);
			w[i].ch = messip_channel_connect(c2, name, 5000);
			CU_ASSERT_FATAL(w[i].ch != NULL);
		}
		CU_ASSERT_FATAL(
			pthread_create(&t[i], NULL, waiter_main, &w[i]) == 0);
		if (i == 0)
			CU_ASSERT(messip_receive(sch, &type, buf, sizeof(buf),
						 5000) >= 0);
	}
	api_sleep_ms(100);
	/* The server's connection ends: every waiting client gets ESRCH. */
	messip_disconnect(scnx, 2000);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(w[i].rc, -1);
		CU_ASSERT_EQUAL(w[i].err, ESRCH);
		CU_ASSERT(w[i].ms < 2000);
	}
	/* And later calls too. */
	CU_ASSERT_EQUAL(messip_send(ch, 1, "x", 1, NULL, NULL, 0, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	CU_ASSERT_EQUAL(messip_buffered_send(ch, 1, "x", 1, 1000), -1);
	CU_ASSERT_EQUAL(errno, ESRCH);
	messip_disconnect(cnx, 2000);
	messip_disconnect(c2, 2000);
}

static void test_server_thread_exits(void)
{
	struct srv s = {.exit_holding = true, .hold_max = 2};
	messip_cnx_t *cnx[2];
	struct waiter w[2];
	pthread_t t[2];

	srv_start(&s, "exit");
	for (int i = 0; i < 2; i++) {
		w[i].ch = cli_open(&cnx[i], s.name);
		CU_ASSERT_FATAL(w[i].ch != NULL);
		CU_ASSERT_FATAL(
			pthread_create(&t[i], NULL, waiter_main, &w[i]) == 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		CU_ASSERT_EQUAL(w[i].rc, -1);
		CU_ASSERT_EQUAL(w[i].err, ESRCH);
		CU_ASSERT(w[i].ms < 5000);
	}
	pthread_join(s.thr, NULL);
	pthread_barrier_destroy(&s.ready);
	CU_ASSERT_EQUAL(s.errors, 0);
	CU_ASSERT_EQUAL(s.served, 2);
	/* The channel lives on (its connection does): this thread may take
	 * it over and serve. */
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(messip_buffered_send(w[i].ch, 5, "z", 1, 1000),
				0 + i);
		messip_disconnect(cnx[i], 2000);
	}
	messip_disconnect(s.cnx, 2000);
}

static void test_poll_loop(void)
{
	messip_cnx_t *scnx = api_connect("ipoll"), *cnx;
	messip_channel_t *sch, *ch;
	struct waiter w;
	pthread_t t;
	struct pollfd p;
	char name[48], buf[8];
	int32_t type;
	int r, got = 0;

	fresh_name(name, sizeof(name), "poll");
	CU_ASSERT_FATAL(scnx != NULL);
	sch = messip_channel_create(scnx, name, 5000, 0);
	CU_ASSERT_FATAL(sch != NULL);
	p.fd = messip_channel_fd(sch);
	p.events = POLLIN;
	CU_ASSERT_FATAL(p.fd >= 0);
	ch = cli_open(&cnx, name);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT_EQUAL(poll(&p, 1, 50), 0); /* nothing yet */
	w.ch = ch;
	CU_ASSERT_FATAL(pthread_create(&t, NULL, waiter_main, &w) == 0);
	for (int i = 0; i < 50 && !got; i++) {
		if (poll(&p, 1, 200) <= 0)
			continue;
		r = messip_receive(sch, &type, buf, sizeof(buf), 0);
		if (r >= 0) {
			got = 1;
			CU_ASSERT_EQUAL(messip_reply(sch, r, 3, NULL, 0, 1000),
					0);
		}
	}
	CU_ASSERT(got);
	pthread_join(t, NULL);
	CU_ASSERT_EQUAL(w.rc, 0);
	/* Taken: the descriptor goes quiet again. */
	r = messip_receive(sch, &type, buf, sizeof(buf), 0);
	CU_ASSERT_EQUAL(r, MESSIP_MSG_TIMEOUT);
	CU_ASSERT_EQUAL(poll(&p, 1, 50), 0);
	messip_disconnect(cnx, 2000);
	messip_disconnect(scnx, 2000);
}

static const struct mp_test_case tests[] = {
	{"path reported, sizes, truncation, dynamic mode, ping",
	 test_path_and_sizes},
	{"MESSIP_NO_INPROC turns the path off", test_no_inproc_env},
	{"long message, vectors, credentials", test_long_vectors_cred},
	{"16 client threads x 10,000 requests", test_many_clients},
	{"timeout: late reply dropped", test_timeout_late_reply},
	{"withdrawn request and ping never delivered", test_withdrawn_and_ping},
	{"buffered: bound, waiting sender, order before DISCONNECT",
	 test_buffered_bound},
	{"zero-copy round trips", test_zero_copy},
	{"zero-copy copies nothing", test_zero_copy_identity},
	{"server connection ends while clients wait", test_server_gone},
	{"server thread exits holding requests", test_server_thread_exits},
	{"server in a poll loop (messip_channel_fd)", test_poll_loop},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_inproc", 120);
	api_verbose();
	unsetenv("MESSIP_NO_INPROC");
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_inproc", tests);
	api_stop_mgr();
	return rc;
}
