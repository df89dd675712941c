/*
 * ex_death — death notification.  A server that asked for it
 * (messip_death_notify) hears MESSIP_MSG_DEATH_PROCESS, with the
 * process's id in ch->remote_id, whenever any other registered process
 * ends without disconnecting — here a worker that crashes.  A process
 * that ends with messip_disconnect is not reported.
 */
#include <signal.h>

#include "example.h"

static void worker(void)
{
	/* static volatile: still referenced when the process dies, so a
	 * leak checker (make demo-valgrind) does not call it lost. */
	static messip_cnx_t *volatile cnx;

	cnx = ex_connect("worker");
	(void)cnx;
	usleep(200 * 1000);
	raise(SIGKILL); /* dies: no goodbye */
}

static void tidy(void)
{
	messip_cnx_t *cnx = ex_connect("tidy");

	messip_disconnect(cnx, 1000); /* a clean end: not a death */
}

int main(void)
{
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t type;
	pid_t t, w;
	int r;

	messip_init();
	cnx = ex_connect("monitor");
	ch = messip_channel_create(cnx, "monitor", 5000, 0);
	EX_CHECK(ch != NULL);
	EX_CHECK(messip_death_notify(cnx, 1000, 1) == 0);

	t = ex_fork(tidy);
	EX_CHECK(ex_wait(t));
	w = ex_fork(worker);
	r = messip_receive(ch, &type, NULL, 0, 5000);
	EX_CHECK(r == MESSIP_MSG_DEATH_PROCESS);
	printf("monitor: process \"%s\" died\n", ch->remote_id);
	EX_CHECK(strcmp(ch->remote_id, "worker") == 0);
	waitpid(w, NULL, 0);
	/* Nothing about the tidy one. */
	EX_CHECK(messip_receive(ch, &type, NULL, 0, 300) == MESSIP_MSG_TIMEOUT);
	messip_disconnect(cnx, 1000);
	return 0;
}
