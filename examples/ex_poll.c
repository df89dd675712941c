/*
 * ex_poll — one poll() loop over several channels.  messip_channel_fd
 * gives a descriptor that is readable whenever messip_receive on that
 * channel would not block, so a program can wait on many channels (and
 * its own descriptors) at once.  After poll, receive with a timeout of 0:
 * the descriptor can also wake for traffic that turns out to belong to
 * another channel of the same connection, and then receive simply
 * reports MESSIP_MSG_TIMEOUT.
 */
#include <poll.h>

#include "example.h"

#define NCH 3

static void client(void)
{
	messip_cnx_t *cnx = ex_connect("client");
	char name[16];
	int32_t answer;

	for (int i = NCH - 1; i >= 0; i--) {
		messip_channel_t *ch;

		snprintf(name, sizeof(name), "poll-%d", i);
		ch = messip_channel_locate(cnx, name, 5000);
		EX_CHECK(ch != NULL);
		EX_CHECK(messip_send(ch, i, NULL, 0, &answer, NULL, 0, 5000) ==
			 0);
		EX_CHECK(messip_buffered_send(ch, 100 + i, NULL, 0, 5000) >= 0);
	}
	messip_disconnect(cnx, 1000);
}

int main(void)
{
	messip_channel_t *ch[NCH];
	struct pollfd pfd[NCH];
	int requests = 0, buffered = 0;
	messip_cnx_t *cnx;
	char name[16];
	pid_t c;

	messip_init();
	cnx = ex_connect("server");
	for (int i = 0; i < NCH; i++) {
		snprintf(name, sizeof(name), "poll-%d", i);
		ch[i] = messip_channel_create(cnx, name, 5000, 0);
		EX_CHECK(ch[i] != NULL);
		pfd[i].fd = messip_channel_fd(ch[i]);
		pfd[i].events = POLLIN;
		EX_CHECK(pfd[i].fd >= 0);
	}
	c = ex_fork(client);
	while (requests < NCH || buffered < NCH) {
		int n = poll(pfd, NCH, 5000);

		EX_CHECK(n > 0);
		for (int i = 0; i < NCH; i++) {
			int32_t type;
			int r;

			if (!(pfd[i].revents & POLLIN))
				continue;
			r = messip_receive(ch[i], &type, NULL, 0, 0);
			if (r >= 0) {
				printf("poll-%d: request %d\n", i, (int)type);
				EX_CHECK(type == i);
				EX_CHECK(messip_reply(ch[i], r, 0, NULL, 0,
						      1000) == 0);
				requests++;
			} else if (r == MESSIP_MSG_NOREPLY) {
				printf("poll-%d: buffered %d\n", i, (int)type);
				EX_CHECK(type == 100 + i);
				buffered++;
			}
		}
	}
	EX_CHECK(ex_wait(c));
	messip_disconnect(cnx, 1000);
	return 0;
}
