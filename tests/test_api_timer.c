/*
 * test_api_timer — timers on a channel: one-shot, repeating, deleted
 * (expiries not yet received are not delivered), first shot 0, argument
 * checks, and that no signal is involved (a sleep is not cut short).
 */
#include "config.h"

#include "test_api_util.h"

static messip_cnx_t *cnx;
static messip_channel_t *ch;

/* Count TIMER outcomes of type for window_ms; other outcomes: *other. */
static int count_timers(int32_t want, int window_ms, int *other)
{
	int64_t end = api_now_ms() + window_ms, left;
	int n = 0;

	while ((left = end - api_now_ms()) > 0) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, NULL, 0, (int)left);

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		if (r == MESSIP_MSG_TIMER && type == want)
			n++;
		else
			(*other)++;
	}
	return n;
}

static void test_one_shot(void)
{
	int32_t type = 0;
	int64_t t0 = api_now_ms(), dt;
	int other = 0;
	timer_t t = messip_timer_create(ch, 42, 100, 0, 0);

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	CU_ASSERT_EQUAL(messip_receive(ch, &type, NULL, 0, 2000),
			MESSIP_MSG_TIMER);
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(type, 42);
	CU_ASSERT(dt >= 95 && dt < 1000);
	CU_ASSERT_EQUAL(ch->datalen, 0);
	/* Once only. */
	CU_ASSERT_EQUAL(count_timers(42, 300, &other), 0);
	CU_ASSERT_EQUAL(other, 0);
	CU_ASSERT_EQUAL(messip_timer_delete(ch, t), 0);
}

static void test_repeating_and_delete(void)
{
	int other = 0, n;
	timer_t t = messip_timer_create(ch, 43, 50, 50, 0);

	CU_ASSERT_PTR_NOT_NULL_FATAL(t);
	n = count_timers(43, 525, &other);
	CU_ASSERT(n >= 8 && n <= 11);
	if (n < 8 || n > 11)
		fprintf(stderr, "repeating timer: %d expiries in 525 ms\n", n);
	/* Let expiries pile up unreceived, then delete: none delivered. */
	api_sleep_ms(180);
	CU_ASSERT_EQUAL(messip_timer_delete(ch, t), 0);
	CU_ASSERT_EQUAL(count_timers(43, 300, &other), 0);
	CU_ASSERT_EQUAL(other, 0);
	/* Deleted already, or never made: EINVAL (never dereferenced). */
	CU_ASSERT_EQUAL(messip_timer_delete(ch, t), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_timer_delete(ch, (timer_t)0x1234), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
}

static void test_two_timers_and_first_shot_zero(void)
{
	timer_t a = messip_timer_create(ch, 1, 0, 0, 0);
	timer_t b = messip_timer_create(ch, 2, 30, 30, 0);
	int seen[3] = {0};
	int64_t end = api_now_ms() + 400;

	CU_ASSERT_FATAL(a && b);
	while (api_now_ms() < end) {
		int32_t type = 0;
		int r = messip_receive(ch, &type, NULL, 0, 100);

		if (r == MESSIP_MSG_TIMER && type >= 1 && type <= 2)
			seen[type]++;
	}
	CU_ASSERT_EQUAL(seen[1], 1);
	CU_ASSERT(seen[2] >= 8);
	CU_ASSERT_EQUAL(messip_timer_delete(ch, b), 0);
	CU_ASSERT_EQUAL(messip_timer_delete(ch, a), 0);
}

static void test_arguments_and_no_signal(void)
{
	struct timespec ts = {0, 300 * 1000000L};
	messip_channel_t *cli;
	int64_t t0;
	timer_t t;
	int rc;

	CU_ASSERT_PTR_NULL(messip_timer_create(ch, 1, -1, 0, 0));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(messip_timer_create(ch, 1, 10, -5, 0));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(messip_timer_create(NULL, 1, 10, 0, 0));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_timer_delete(NULL, NULL), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	/* A timer needs a server channel. */
	cli = messip_channel_connect(cnx, "t-timer", 1000);
	if (cli) {
		CU_ASSERT_PTR_NULL(messip_timer_create(cli, 1, 10, 0, 0));
		CU_ASSERT_EQUAL(errno, EINVAL);
	}
	/* No signal: a 300 ms sleep with a 5 ms timer armed is whole. */
	t = messip_timer_create(ch, 9, 5, 5, 0);
	CU_ASSERT_PTR_NOT_NULL(t);
	t0 = api_now_ms();
	rc = nanosleep(&ts, NULL);
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT(api_now_ms() - t0 >= 295);
	CU_ASSERT_EQUAL(messip_timer_delete(ch, t), 0);
	/* The timer's banked expiries went with it; our own HELLO from the
	 * client handle above is handled inside receive. */
	{
		int other = 0;

		CU_ASSERT_EQUAL(count_timers(9, 200, &other), 0);
		CU_ASSERT_EQUAL(other, 0);
	}
	if (cli)
		messip_channel_disconnect(cli, 0);
}

static const struct mp_test_case tests[] = {
	{"timer: one shot", test_one_shot},
	{"timer: repeating, then deleted with expiries pending",
	 test_repeating_and_delete},
	{"timer: two at once, first shot 0",
	 test_two_timers_and_first_shot_zero},
	{"timer: arguments, no signals", test_arguments_and_no_signal},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_timer", 60);
	api_verbose();
	api_start_mgr(1, NULL);
	cnx = api_connect("timers");
	ch = cnx ? messip_channel_create(cnx, "t-timer", 2000, 0) : NULL;
	if (!ch) {
		fprintf(stderr, "setup failed: %s\n", strerror(errno));
		api_stop_mgr();
		return 1;
	}
	rc = mp_test_main("api_timer", tests);
	messip_disconnect(cnx, 2000);
	api_stop_mgr();
	return rc;
}
