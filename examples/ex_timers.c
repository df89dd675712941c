/*
 * ex_timers — timers arrive through receive like messages
 * (MESSIP_MSG_TIMER, *type = the timer's type): a one-shot, a repeating
 * one, and one deleted before it fires (never delivered).  No signal is
 * used, so the program's own sleeps are never cut short.
 */
#include "example.h"

#define ONE_SHOT  1
#define REPEATING 2
#define DELETED	  3

int main(void)
{
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	timer_t once, rep, del;
	int count[4] = {0};

	messip_init();
	cnx = ex_connect("timers");
	ch = messip_channel_create(cnx, "timers", 5000, 0);
	EX_CHECK(ch != NULL);
	once = messip_timer_create(ch, ONE_SHOT, 150, 0, 0);
	rep = messip_timer_create(ch, REPEATING, 50, 100, 0);
	del = messip_timer_create(ch, DELETED, 100, 0, 0);
	EX_CHECK(once && rep && del);
	EX_CHECK(messip_timer_delete(ch, del) == 0);

	/* Half a second of timers. */
	for (;;) {
		int32_t type;
		int r = messip_receive(ch, &type, NULL, 0, 500);

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		EX_CHECK(r == MESSIP_MSG_TIMER && type >= 1 && type <= 3);
		count[type]++;
		printf("timer %d\n", (int)type);
		if (type == REPEATING && count[type] == 5)
			EX_CHECK(messip_timer_delete(ch, rep) == 0);
	}
	printf("one-shot %d, repeating %d, deleted %d\n", count[ONE_SHOT],
	       count[REPEATING], count[DELETED]);
	EX_CHECK(count[ONE_SHOT] == 1 && count[REPEATING] == 5 &&
		 count[DELETED] == 0);
	EX_CHECK(messip_timer_delete(ch, once) == 0);
	messip_disconnect(cnx, 1000);
	return 0;
}
