/*
 * ex_two_clients — one server, two clients, replies out of order.  The
 * server holds both requests (two receive indices) and answers the second
 * first: a reply goes to whichever index it names, in any order.
 */
#include "example.h"

static void server(void)
{
	messip_cnx_t *cnx = ex_connect("server");
	messip_channel_t *ch = messip_channel_create(cnx, "twocli", 5000, 0);
	int index[2], n = 0;
	int32_t type[2];

	EX_CHECK(ch != NULL);
	while (n < 2) {
		char buf[32];
		int r = messip_receive(ch, &type[n], buf, sizeof(buf), 5000);

		EX_CHECK(r != MESSIP_MSG_TIMEOUT);
		if (r >= 0)
			index[n++] = r;
	}
	printf("server: holding index %d (type %d) and %d (type %d)\n",
	       index[0], (int)type[0], index[1], (int)type[1]);
	for (int i = 1; i >= 0; i--) {
		printf("server: replying to index %d\n", index[i]);
		EX_CHECK(messip_reply(ch, index[i], type[i] * 100, NULL, 0,
				      1000) == 0);
	}
	messip_disconnect(cnx, 1000);
}

static void client(int32_t type)
{
	messip_cnx_t *cnx = ex_connect("client");
	messip_channel_t *ch = messip_channel_locate(cnx, "twocli", 5000);
	int32_t answer = 0;

	EX_CHECK(ch != NULL);
	EX_CHECK(messip_send(ch, type, NULL, 0, &answer, NULL, 0, 5000) == 0);
	printf("client %d: answer %d\n", (int)type, (int)answer);
	EX_CHECK(answer == type * 100);
	messip_disconnect(cnx, 1000);
}

static void client1(void)
{
	client(1);
}

static void client2(void)
{
	client(2);
}

int main(void)
{
	pid_t s, c1, c2;

	messip_init();
	s = ex_fork(server);
	c1 = ex_fork(client1);
	c2 = ex_fork(client2);
	return ex_wait(c1) && ex_wait(c2) && ex_wait(s) ? 0 : 1;
}
