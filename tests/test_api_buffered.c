/*
 * test_api_buffered — buffered messages through the manager: order and
 * sender identity, the "queued before" count, back-pressure against a
 * small queue (full + timeout: ETIMEDOUT and not queued; a waiting sender
 * wakes when the server takes one), truncation and dynamic mode, size
 * limits (library and manager), records and events that arrive in the
 * same read as an answer.
 */
#include "config.h"

#include "test_api_util.h"

#define N_ORDER 300

struct bsender_arg {
	const char *name;
	int count;
	struct api_gate *go; /* optional: wait before the last phase */
};

static void order_sender(void *p)
{
	struct bsender_arg *a = p;
	messip_cnx_t *cnx = api_connect("bsender");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	for (int i = 0; i < a->count; i++)
		CHILD_CHECK(messip_buffered_send(ch, i % 7, &i, sizeof(i),
						 10000) >= 0);
	CHILD_CHECK(messip_channel_disconnect(ch, 2000) == MESSIP_OK);
	CHILD_CHECK(messip_disconnect(cnx, 2000) == 0);
}

static void test_order_and_sender(void)
{
	messip_cnx_t *cnx = api_connect("bserver");
	struct bsender_arg a = {"t-border", N_ORDER, NULL};
	messip_channel_t *ch;
	int next = 0, bad = 0, disc = 0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-border", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	pid = api_fork(order_sender, &a);
	while (next < N_ORDER || !disc) {
		int32_t type = -1, v = -1;
		int r = messip_receive(ch, &type, &v, sizeof(v), 5000);

		if (r == MESSIP_MSG_DISCONNECT) {
			disc++;
			continue;
		}
		if (r != MESSIP_MSG_NOREPLY) {
			CU_FAIL("unexpected receive outcome");
			fprintf(stderr, "receive: %d (%s) after %d\n", r,
				strerror(errno), next);
			break;
		}
		if (v != next || type != next % 7 || ch->datalen != 4 ||
		    strcmp(ch->remote_id, "bsender") != 0)
			bad++;
		next++;
	}
	CU_ASSERT_EQUAL(next, N_ORDER);
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(disc, 1);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
}

/* ---- back-pressure ------------------------------------------------------- */

struct press_arg {
	struct api_gate *phase; /* child -> parent */
	struct api_gate *go;	/* parent -> child */
};

static void pressing_sender(void *p)
{
	struct press_arg *a = p;
	messip_cnx_t *cnx = api_connect("presser");
	messip_channel_t *ch;
	int64_t t0, dt;
	int32_t rc;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-press", 5000);
	CHILD_CHECK(ch);
	/* Room for 4: the count of those queued before each. */
	for (int i = 0; i < 4; i++) {
		rc = messip_buffered_send(ch, i, &i, sizeof(i), 2000);
		CHILD_CHECK(rc == i);
	}
	/* Full: waits out its timeout, then ETIMEDOUT, not queued. */
	t0 = api_now_ms();
	rc = messip_buffered_send(ch, 99, "lost", 4, 300);
	dt = api_now_ms() - t0;
	CHILD_CHECK(rc == -1 && errno == ETIMEDOUT);
	CHILD_CHECK(dt >= 280 && dt < 3000);
	/* Polling a full queue: at once. */
	t0 = api_now_ms();
	rc = messip_buffered_send(ch, 99, "lost", 4, 0);
	CHILD_CHECK(rc == -1 && errno == ETIMEDOUT);
	CHILD_CHECK(api_now_ms() - t0 < 1000);
	api_gate_signal(a->phase);
	/* Waits for room: the server takes one after ~400 ms. */
	t0 = api_now_ms();
	rc = messip_buffered_send(ch, 4, "wait", 4, 10000);
	dt = api_now_ms() - t0;
	CHILD_CHECK(rc >= 0);
	CHILD_CHECK(dt >= 300 && dt < 5000);
	CHILD_CHECK(api_gate_wait(a->go, 10000));
	CHILD_CHECK(messip_buffered_send(ch, 5, "last", 4, 2000) >= 0);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_back_pressure(void)
{
	messip_cnx_t *cnx = api_connect("presssrv");
	struct api_gate phase, go;
	struct press_arg a = {&phase, &go};
	messip_channel_t *ch;
	int types[8], n = 0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-press", 2000, 4);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&phase);
	api_gate_init(&go);
	pid = api_fork(pressing_sender, &a);
	CU_ASSERT_FATAL(api_gate_wait(&phase, 10000));
	api_sleep_ms(400);
	/* Take everything: 0..3, then 4 (the waiter), never 99. */
	for (;;) {
		int32_t type = -1;
		char buf[8];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 1000);

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
		if (r == MESSIP_MSG_NOREPLY && n < 8)
			types[n++] = type;
	}
	CU_ASSERT_EQUAL(n, 5);
	for (int i = 0; i < n; i++)
		CU_ASSERT_EQUAL(types[i], i);
	api_gate_signal(&go);
	{
		int32_t type = -1;
		char buf[8];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 5000);

		CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
		CU_ASSERT_EQUAL(type, 5);
	}
	CU_ASSERT(api_child_ok(pid, 5000));
	api_gate_close(&phase);
	api_gate_close(&go);
	messip_disconnect(cnx, 2000);
}

/* ---- sizes, truncation, dynamic mode ------------------------------------- */

static void sizes_sender(void *p)
{
	const char *ref = p;
	static char big[65537];
	messip_cnx_t *cnx = messip_connect(ref, "sizes", 5000);
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-bsizes", 5000);
	CHILD_CHECK(ch);
	memset(big, 'b', sizeof(big));
	CHILD_CHECK(messip_buffered_send(ch, 1, big, 100, 2000) >= 0);
	CHILD_CHECK(messip_buffered_send(ch, 2, big, 100, 2000) >= 0);
	CHILD_CHECK(messip_buffered_send(ch, 3, NULL, 0, 2000) >= 0);
	CHILD_CHECK(messip_buffered_send(ch, 4, big, 65536, 2000) >= 0);
	CHILD_CHECK(messip_buffered_send(ch, 5, big, 65537, 2000) == -1 &&
		    errno == EMSGSIZE);
	CHILD_CHECK(messip_buffered_send(ch, 5, NULL, 3, 2000) == -1 &&
		    errno == EINVAL);
	CHILD_CHECK(messip_buffered_send(NULL, 5, big, 3, 2000) == -1 &&
		    errno == EINVAL);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_sizes_truncation_dynamic(void)
{
	messip_cnx_t *cnx = api_connect("bsizesrv");
	static char buf[65536];
	messip_channel_t *ch;
	int32_t type;
	void *dyn = NULL;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-bsizes", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	pid = api_fork(sizes_sender, api_mgr.ref);
	/* Longer than the buffer: cut, datalen tells. */
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, 10, 5000),
			MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 1);
	CU_ASSERT_EQUAL(ch->datalen, 100);
	CU_ASSERT_EQUAL(ch->datalenr, 10);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "sizes");
	/* Dynamic mode. */
	CU_ASSERT_EQUAL(messip_receive(ch, &type, &dyn, 0, 5000),
			MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 2);
	CU_ASSERT_PTR_NOT_NULL(dyn);
	CU_ASSERT_EQUAL(ch->datalenr, 100);
	if (dyn)
		CU_ASSERT(((char *)dyn)[99] == 'b');
	free(dyn);
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, sizeof(buf), 5000),
			MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 3);
	CU_ASSERT_EQUAL(ch->datalen, 0);
	CU_ASSERT_EQUAL(messip_receive(ch, &type, buf, sizeof(buf), 5000),
			MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 4);
	CU_ASSERT_EQUAL(ch->datalen, 65536);
	CU_ASSERT_EQUAL(buf[65535], 'b');
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
}

/* The manager's own limit (max_message_size) answers EMSGSIZE. */
static void small_sender(void *p)
{
	const char *ref = p;
	char big[2048];
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer;

	/* The manager's limit applies to what goes through the manager: a
	 * same-host client writes into the server's segment instead. */
	setenv("MESSIP_NO_SHM", "1", 1);
	cnx = messip_connect(ref, "small", 5000);

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-small", 5000);
	CHILD_CHECK(ch);
	memset(big, 's', sizeof(big));
	CHILD_CHECK(messip_buffered_send(ch, 1, big, 2048, 2000) == -1 &&
		    errno == EMSGSIZE);
	/* The connection is still fine afterwards. */
	CHILD_CHECK(messip_buffered_send(ch, 2, big, 512, 2000) >= 0);
	/* Synchronous messages do not go through the manager. */
	CHILD_CHECK(messip_send(ch, 3, big, 2048, &answer, NULL, 0, 2000) == 0);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_manager_size_limit(void)
{
	struct mp_mgrproc small;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t type;
	char buf[4096];
	pid_t pid;
	int r;

	CU_ASSERT_FATAL(mp_mgrproc_start(&small, 1,
					 "log_level warning\n"
					 "max_message_size 1024\n") == 0);
	cnx = messip_connect(small.ref, "smallsrv", 5000);
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-small", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	pid = api_fork(small_sender, small.ref);
	r = messip_receive(ch, &type, buf, sizeof(buf), 5000);
	CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
	CU_ASSERT_EQUAL(type, 2);
	r = messip_receive(ch, &type, buf, sizeof(buf), 5000);
	CU_ASSERT(r >= 0);
	CU_ASSERT_EQUAL(ch->datalen, 2048);
	if (r >= 0)
		messip_reply(ch, r, 0, NULL, 0, 1000);
	CU_ASSERT(api_child_ok(pid, 5000));
	messip_disconnect(cnx, 2000);
	mp_mgrproc_stop(&small);
}

/* ---- frames right behind an answer ---------------------------------------- */

/*
 * The manager answers a request and, in the same write, streams what that
 * request caused: a record pushed to the caller's own channel, or the
 * DISCONNECT event of the caller's own client handle.  The library reads
 * both at once and returns the answer; the rest waits in its buffer, where
 * the socket no longer reports it.  receive must still hand it out at once
 * (it used to sleep until some other traffic came, up to its timeout).
 */
static void test_frames_behind_answer(void)
{
	messip_cnx_t *cnx = api_connect("behind");
	messip_channel_t *srv, *self;
	int32_t type = -1, v = -1;
	int64_t t0;
	int r, i = 7;

	CU_ASSERT_FATAL(cnx != NULL);
	srv = messip_channel_create(cnx, "t-behind", 2000, 0);
	CU_ASSERT_FATAL(srv != NULL);
	self = messip_channel_connect(cnx, "t-behind", 2000);
	CU_ASSERT_FATAL(self != NULL);
	for (int round = 0; round < 5; round++) {
		CU_ASSERT(messip_buffered_send(self, 3, &i, sizeof(i), 2000) ==
			  0);
		t0 = api_now_ms();
		r = messip_receive(srv, &type, &v, sizeof(v), 2000);
		CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
		CU_ASSERT_EQUAL(type, 3);
		CU_ASSERT_EQUAL(v, 7);
		CU_ASSERT(api_now_ms() - t0 < 200);
	}
	CU_ASSERT(messip_channel_disconnect(self, 2000) == MESSIP_OK);
	t0 = api_now_ms();
	do
		r = messip_receive(srv, &type, &v, sizeof(v), 2000);
	while (r >= 0 && r != MESSIP_MSG_DISCONNECT &&
	       api_now_ms() - t0 < 2000);
	CU_ASSERT_EQUAL(r, MESSIP_MSG_DISCONNECT);
	CU_ASSERT(api_now_ms() - t0 < 200);
	messip_disconnect(cnx, 2000);
}

static const struct mp_test_case tests[] = {
	{"buffered: order, type and sender", test_order_and_sender},
	{"buffered: full queue, timeout, waiting for room", test_back_pressure},
	{"buffered: truncation, dynamic mode, sizes",
	 test_sizes_truncation_dynamic},
	{"buffered: manager's max_message_size", test_manager_size_limit},
	{"records and events right behind an answer are not held back",
	 test_frames_behind_answer},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_buffered", 90);
	api_verbose();
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_buffered", tests);
	api_stop_mgr();
	return rc;
}
