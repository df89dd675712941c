/*
 * ex_timeouts — deadlines and departures.  A client's send times out
 * while the server is busy (the late reply is discarded, the next send
 * gets its own answer); one client disconnects (the server sees
 * MESSIP_MSG_DISCONNECT) and another dies (MESSIP_MSG_DISMISSED, and a
 * reply to it fails with ESRCH); at last the server's receive times out.
 */
#include <signal.h>

#include "example.h"

static void server(void)
{
	messip_cnx_t *cnx = ex_connect("server");
	messip_channel_t *ch = messip_channel_create(cnx, "timeouts", 5000, 0);
	int held = -1, r, disconnects = 0, dismissed = 0;
	int32_t type;
	char buf[32];

	EX_CHECK(ch != NULL);
	while (disconnects < 1 || dismissed < 1) {
		r = messip_receive(ch, &type, buf, sizeof(buf), 10000);
		EX_CHECK(r != MESSIP_MSG_TIMEOUT);
		if (r == MESSIP_MSG_DISCONNECT) {
			printf("server: %s disconnected\n", ch->remote_id);
			disconnects++;
		} else if (r == MESSIP_MSG_DISMISSED) {
			printf("server: %s is gone\n", ch->remote_id);
			dismissed++;
		} else if (r >= 0 && type == 1) {
			usleep(300 * 1000); /* too slow for its deadline */
			EX_CHECK(messip_reply(ch, r, 1, NULL, 0, 1000) == 0);
		} else if (r >= 0 && type == 2) {
			EX_CHECK(messip_reply(ch, r, 2, NULL, 0, 1000) == 0);
		} else if (r >= 0) {
			held = r; /* the doomed client's request */
		}
	}
	/* Its requester died: replying says so, and we carry on. */
	EX_CHECK(held >= 0);
	EX_CHECK(messip_reply(ch, held, 0, NULL, 0, 1000) == -1 &&
		 errno == ESRCH);
	printf("server: reply to the dead client: ESRCH\n");
	/* Nobody left: the receive times out. */
	EX_CHECK(messip_receive(ch, &type, buf, sizeof(buf), 100) ==
			 MESSIP_MSG_TIMEOUT &&
		 errno == ETIMEDOUT);
	printf("server: receive timed out after 100 ms\n");
	messip_disconnect(cnx, 1000);
}

static void patient(void)
{
	messip_cnx_t *cnx = ex_connect("patient");
	messip_channel_t *ch = messip_channel_locate(cnx, "timeouts", 5000);
	int32_t answer = 0;

	EX_CHECK(ch != NULL);
	EX_CHECK(messip_send(ch, 1, NULL, 0, &answer, NULL, 0, 100) ==
			 MESSIP_MSG_TIMEOUT &&
		 errno == ETIMEDOUT);
	printf("patient: timed out after 100 ms\n");
	/* The late answer (1) is dropped; this one gets 2. */
	EX_CHECK(messip_send(ch, 2, NULL, 0, &answer, NULL, 0, 2000) == 0);
	EX_CHECK(answer == 2);
	printf("patient: next answer is its own: %d\n", (int)answer);
	EX_CHECK(messip_channel_disconnect(ch, 1000) == MESSIP_OK);
	messip_disconnect(cnx, 1000);
}

static void doomed(void)
{
	messip_cnx_t *cnx = ex_connect("doomed");
	messip_channel_t *ch = messip_channel_locate(cnx, "timeouts", 5000);
	int32_t answer;

	EX_CHECK(ch != NULL);
	messip_send(ch, 3, NULL, 0, &answer, NULL, 0, MESSIP_NOTIMEOUT);
}

int main(void)
{
	pid_t s, p, d;

	messip_init();
	s = ex_fork(server);
	p = ex_fork(patient);
	d = ex_fork(doomed);
	EX_CHECK(ex_wait(p));
	usleep(200 * 1000); /* let the doomed client's request arrive */
	kill(d, SIGKILL);
	waitpid(d, NULL, 0);
	return ex_wait(s) ? 0 : 1;
}
