/*
 * ex_buffered — buffered messages against a small buffer.  The channel
 * holds at most 4; the sender does not wait for the server, except when
 * the queue is full: then it waits for room (up to its timeout) and,
 * timed out, the message is not queued.  Nothing accepted is lost.
 */
#include "example.h"

#define N 20

static void server(void)
{
	messip_cnx_t *cnx = ex_connect("server");
	messip_channel_t *ch = messip_channel_create(cnx, "buffered", 5000, 4);
	int got = 0;

	EX_CHECK(ch != NULL);
	usleep(500 * 1000); /* let the queue fill up */
	while (got < N) {
		int32_t type, value;
		int r = messip_receive(ch, &type, &value, sizeof(value), 5000);

		if (r == MESSIP_MSG_DISCONNECT)
			continue;
		EX_CHECK(r == MESSIP_MSG_NOREPLY); /* no reply to give */
		EX_CHECK(value == got);		   /* in order */
		got++;
		usleep(10 * 1000); /* a slow consumer */
	}
	printf("server: received %d buffered messages in order\n", got);
	messip_disconnect(cnx, 1000);
}

static void sender(void)
{
	messip_cnx_t *cnx = ex_connect("sender");
	messip_channel_t *ch = messip_channel_locate(cnx, "buffered", 5000);

	EX_CHECK(ch != NULL);
	for (int i = 0; i < 4; i++)
		printf("sender: %d queued before message %d\n",
		       (int)messip_buffered_send(ch, 0, &i, sizeof(i), 1000),
		       i);
	/* Full, and the server is not taking any yet: a short timeout
	 * gives up, and that message is not queued. */
	EX_CHECK(messip_buffered_send(ch, 0, "x", 1, 100) == -1 &&
		 errno == ETIMEDOUT);
	printf("sender: queue full, gave up after 100 ms\n");
	/* A longer one waits for the server to make room. */
	for (int i = 4; i < N; i++)
		EX_CHECK(messip_buffered_send(ch, 0, &i, sizeof(i), 5000) >= 0);
	printf("sender: all %d sent\n", N);
	messip_disconnect(cnx, 1000);
}

int main(void)
{
	pid_t s, c;

	messip_init();
	s = ex_fork(server);
	c = ex_fork(sender);
	return ex_wait(c) && ex_wait(s) ? 0 : 1;
}
