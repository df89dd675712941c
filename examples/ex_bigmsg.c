/*
 * ex_bigmsg — a message larger than the receive buffer.  It is still
 * received: the first maxlen bytes land in the buffer, ch->datalen tells
 * the full length, and the whole message stays in
 * ch->receive_allmsg[index] until the reply.  Dynamic mode (maxlen 0,
 * buffer a void **) allocates a buffer of the right size instead.
 */
#include "example.h"

#define SIZE 50000

static void client(void)
{
	messip_cnx_t *cnx = ex_connect("client");
	messip_channel_t *ch = messip_channel_locate(cnx, "bigmsg", 5000);
	static char big[SIZE];
	int32_t answer;

	EX_CHECK(ch != NULL);
	for (int i = 0; i < SIZE; i++)
		big[i] = (char)('a' + i % 26);
	for (int i = 0; i < 2; i++) {
		EX_CHECK(messip_send(ch, i, big, SIZE, &answer, NULL, 0,
				     5000) == 0);
		EX_CHECK(answer == 1);
	}
	messip_disconnect(cnx, 1000);
}

int main(void)
{
	/* static: the forked client inherits this connection and exits
	 * without it; reachable, it is not reported lost in the child by a
	 * leak checker (make demo-valgrind). */
	static messip_cnx_t *cnx;
	messip_channel_t *ch;
	char small[100];
	void *whole = NULL;
	const char *all;
	int32_t type;
	int index;
	pid_t c;

	messip_init();
	cnx = ex_connect("server");
	ch = messip_channel_create(cnx, "bigmsg", 5000, 0);
	EX_CHECK(ch != NULL);
	c = ex_fork(client);

	/* A 100-byte buffer for a 50000-byte message. */
	index = messip_receive(ch, &type, small, sizeof(small), 5000);
	EX_CHECK(index >= 0);
	all = ch->receive_allmsg[index];
	printf("received %d of %d bytes; the rest is in receive_allmsg\n",
	       (int)ch->datalenr, (int)ch->datalen);
	EX_CHECK(ch->datalenr == 100 && ch->datalen == SIZE);
	EX_CHECK(all[SIZE - 1] == (char)('a' + (SIZE - 1) % 26));
	EX_CHECK(messip_reply(ch, index, 1, NULL, 0, 1000) == 0);

	/* Dynamic mode: the library allocates, we free. */
	index = messip_receive(ch, &type, &whole, 0, 5000);
	EX_CHECK(index >= 0 && whole != NULL && ch->datalenr == SIZE);
	printf("dynamic mode: a buffer of %d bytes\n", (int)ch->datalenr);
	EX_CHECK(((char *)whole)[SIZE - 1] == (char)('a' + (SIZE - 1) % 26));
	free(whole);
	EX_CHECK(messip_reply(ch, index, 1, NULL, 0, 1000) == 0);
	EX_CHECK(ex_wait(c));
	messip_disconnect(cnx, 1000);
	return 0;
}
