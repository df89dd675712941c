/*
 * ex_basic — the smallest exchange: a server creates the channel "basic",
 * a client sends it a message and blocks until the reply arrives.
 */
#include "example.h"

static void server(void)
{
	messip_cnx_t *cnx = ex_connect("server");
	messip_channel_t *ch = messip_channel_create(cnx, "basic", 5000, 0);
	char buf[80];
	int32_t type;
	int index;

	EX_CHECK(ch != NULL);
	/* An index >= 0 is a synchronous message awaiting our reply. */
	index = messip_receive(ch, &type, buf, sizeof(buf), MESSIP_NOTIMEOUT);
	EX_CHECK(index >= 0);
	printf("server: type %d, \"%.*s\" from %s\n", (int)type,
	       (int)ch->datalenr, buf, ch->remote_id);
	EX_CHECK(messip_reply(ch, index, 42, "world", 6, 1000) == 0);
	/* The client says goodbye: MESSIP_MSG_DISCONNECT. */
	EX_CHECK(messip_receive(ch, &type, buf, sizeof(buf), 5000) ==
		 MESSIP_MSG_DISCONNECT);
	messip_channel_delete(ch, 1000);
	messip_disconnect(cnx, 1000);
}

static void client(void)
{
	messip_cnx_t *cnx = ex_connect("client");
	/* locate waits for the server to create the channel. */
	messip_channel_t *ch = messip_channel_locate(cnx, "basic", 5000);
	char reply[80];
	int32_t answer;

	EX_CHECK(ch != NULL);
	EX_CHECK(messip_send(ch, 1, "hello", 6, &answer, reply, sizeof(reply),
			     5000) == 0);
	printf("client: answer %d, \"%s\" from %s\n", (int)answer, reply,
	       ch->remote_id);
	EX_CHECK(answer == 42 && strcmp(reply, "world") == 0);
	messip_channel_disconnect(ch, 1000);
	messip_disconnect(cnx, 1000);
}

int main(void)
{
	pid_t s, c;

	messip_init();
	s = ex_fork(server);
	c = ex_fork(client);
	return ex_wait(c) && ex_wait(s) ? 0 : 1;
}
