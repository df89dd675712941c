/*
 * test_api_thread — what messip.h promises about threads: messip_init,
 * messip_connect and the logging calls from many threads at once, and
 * threads that each use their own connection exchanging messages at the
 * same time (synchronous and buffered) without any locking of their own.
 * Meant to be run under ThreadSanitizer too (--enable-sanitizers=thread).
 */
#include "config.h"

#include <pthread.h>

#include "test_api_util.h"

#define PAIRS  3
#define ROUNDS 1500

static int nlines;

static void count_logger(unsigned level, const char *msg)
{
	(void)level;
	(void)msg;
	__atomic_add_fetch(&nlines, 1, __ATOMIC_RELAXED);
}

static void *connect_many(void *arg)
{
	int fails = 0;

	(void)arg;
	for (int i = 0; i < 20; i++) {
		messip_cnx_t *cnx;

		messip_init();
		messip_set_log_level(MESSIP_LOG_ERROR | MESSIP_LOG_WARNING);
		messip_log(MESSIP_LOG_WARNING, "thread line %d", i);
		(void)messip_get_log_level();
		cnx = api_connect("thr");
		if (!cnx) {
			fails++;
			continue;
		}
		if (messip_disconnect(cnx, 2000) != 0)
			fails++;
	}
	return (void *)(intptr_t)fails;
}

static void test_connect_and_log_from_threads(void)
{
	pthread_t t[6];
	void *ret;

	messip_set_logger(count_logger);
	nlines = 0;
	for (int i = 0; i < 6; i++)
		CU_ASSERT_FATAL(
			pthread_create(&t[i], NULL, connect_many, NULL) == 0);
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], &ret);
		CU_ASSERT_EQUAL((intptr_t)ret, 0);
	}
	CU_ASSERT_EQUAL(__atomic_load_n(&nlines, __ATOMIC_RELAXED), 6 * 20);
	messip_set_logger(NULL);
	api_verbose();
}

/* ---- pairs of threads, each with its own connection -----------------------
 */

struct pair {
	char name[32];
	int errors;
	int received;
	pthread_barrier_t *ready;
};

static void *server_thread(void *arg)
{
	struct pair *p = arg;
	messip_cnx_t *cnx = api_connect("tsrv");
	messip_channel_t *ch = NULL;
	int buffered = 0, sync = 0;

	if (cnx)
		ch = messip_channel_create(cnx, p->name, 5000, 0);
	pthread_barrier_wait(p->ready);
	if (!ch) {
		p->errors++;
		return NULL;
	}
	while (sync < ROUNDS || buffered < ROUNDS) {
		char buf[256];
		int32_t type = 0;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 10000);

		if (r == MESSIP_MSG_NOREPLY) {
			if (type != buffered++)
				p->errors++;
			continue;
		}
		if (r < 0) {
			p->errors++;
			if (r == MESSIP_MSG_TIMEOUT)
				break;
			continue;
		}
		if (type != sync++)
			p->errors++;
		if (messip_reply(ch, r, type, buf, ch->datalenr, 5000) != 0)
			p->errors++;
	}
	p->received = sync + buffered;
	/* Wait for the client's DISCONNECT before deleting. */
	for (;;) {
		int32_t type;
		int r = messip_receive(ch, &type, NULL, 0, 5000);

		if (r == MESSIP_MSG_DISCONNECT || r == MESSIP_MSG_TIMEOUT)
			break;
	}
	if (messip_channel_delete(ch, 5000) != 0)
		p->errors++;
	messip_disconnect(cnx, 5000);
	return NULL;
}

static void *client_thread(void *arg)
{
	struct pair *p = arg;
	messip_cnx_t *cnx;
	messip_channel_t *ch;

	pthread_barrier_wait(p->ready);
	cnx = api_connect("tcli");
	ch = cnx ? messip_channel_connect(cnx, p->name, 5000) : NULL;
	if (!ch) {
		p->errors++;
		if (cnx)
			messip_disconnect(cnx, 1000);
		return NULL;
	}
	for (int i = 0; i < ROUNDS; i++) {
		char out[64], in[64];
		int32_t answer = -1;
		int n = snprintf(out, sizeof(out), "%s #%d", p->name, i);

		if (messip_buffered_send(ch, i, out, n, 5000) < 0)
			p->errors++;
		if (messip_send(ch, i, out, n, &answer, in, sizeof(in), 5000) !=
			    0 ||
		    answer != i || ch->datalen != n ||
		    memcmp(in, out, (size_t)n) != 0)
			p->errors++;
	}
	messip_channel_disconnect(ch, 5000);
	messip_disconnect(cnx, 5000);
	return NULL;
}

static void test_threads_exchange(void)
{
	pthread_t srv[PAIRS], cli[PAIRS];
	pthread_barrier_t ready[PAIRS];
	struct pair pairs[PAIRS];

	for (int i = 0; i < PAIRS; i++) {
		memset(&pairs[i], 0, sizeof(pairs[i]));
		snprintf(pairs[i].name, sizeof(pairs[i].name), "t-thread-%d",
			 i);
		pthread_barrier_init(&ready[i], NULL, 2);
		pairs[i].ready = &ready[i];
		CU_ASSERT_FATAL(pthread_create(&srv[i], NULL, server_thread,
					       &pairs[i]) == 0);
		CU_ASSERT_FATAL(pthread_create(&cli[i], NULL, client_thread,
					       &pairs[i]) == 0);
	}
	for (int i = 0; i < PAIRS; i++) {
		pthread_join(cli[i], NULL);
		pthread_join(srv[i], NULL);
		pthread_barrier_destroy(&ready[i]);
		CU_ASSERT_EQUAL(pairs[i].errors, 0);
		CU_ASSERT_EQUAL(pairs[i].received, 2 * ROUNDS);
	}
}

static const struct mp_test_case tests[] = {
	{"init, connect and logging from many threads",
	 test_connect_and_log_from_threads},
	{"threads with their own connections exchange messages",
	 test_threads_exchange},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_thread", 90);
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_thread", tests);
	api_stop_mgr();
	return rc;
}
