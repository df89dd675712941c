/*
 * ex_channels — one process serving several channels.  Each channel has
 * its own receive; buffered messages and events reach the channel they
 * were sent to even though the process has one connection to the manager.
 * A client talks to both.
 */
#include "example.h"

static const char *names[] = {"chan-orders", "chan-billing"};

static void client(void)
{
	messip_cnx_t *cnx = ex_connect("client");
	int32_t answer;

	for (int i = 0; i < 2; i++) {
		messip_channel_t *ch =
			messip_channel_locate(cnx, names[i], 5000);

		EX_CHECK(ch != NULL);
		EX_CHECK(messip_buffered_send(ch, 10 + i, names[i],
					      (int)strlen(names[i]) + 1,
					      1000) >= 0);
		EX_CHECK(messip_send(ch, 20 + i, NULL, 0, &answer, NULL, 0,
				     5000) == 0);
		EX_CHECK(answer == i);
	}
	messip_disconnect(cnx, 1000);
}

int main(void)
{
	messip_channel_t *ch[2];
	messip_cnx_t *cnx;
	pid_t c;

	messip_init();
	cnx = ex_connect("server");
	for (int i = 0; i < 2; i++) {
		ch[i] = messip_channel_create(cnx, names[i], 5000, 0);
		EX_CHECK(ch[i] != NULL);
	}
	c = ex_fork(client);
	/* Serve each channel in turn: a buffered message and a request.
	 * They travel by different paths (the buffered one through the
	 * manager), so either may come first. */
	for (int i = 0; i < 2; i++) {
		for (int n = 0; n < 2; n++) {
			char buf[64];
			int32_t type;
			int r = messip_receive(ch[i], &type, buf, sizeof(buf),
					       5000);

			if (r == MESSIP_MSG_NOREPLY) {
				EX_CHECK(type == 10 + i);
				EX_CHECK(strcmp(buf, names[i]) == 0);
				printf("%s: buffered \"%s\" from %s\n",
				       names[i], buf, ch[i]->remote_id);
			} else {
				EX_CHECK(r >= 0 && type == 20 + i);
				EX_CHECK(messip_reply(ch[i], r, i, NULL, 0,
						      1000) == 0);
				printf("%s: request %d answered\n", names[i],
				       (int)type);
			}
		}
	}
	EX_CHECK(ex_wait(c));
	messip_disconnect(cnx, 1000);
	return 0;
}
