/*
 * ex_throughput — how many messages per second, for each message size.
 *
 *   ex_throughput [-t seconds] [-b] [size ...]
 *
 * Synchronous mode (default): the client sends `size` bytes and the server
 * replies with as many, in a loop for the given time (default 1 s); the
 * rate is round trips per second.  Buffered mode (-b): the client sends
 * buffered messages as fast as the queue takes them, then asks the server
 * (synchronously) to confirm it received them all.  Sizes default to
 * 0 64 1024 16384 65536.
 */
#include <time.h>

#include "example.h"

#define T_DATA 1
#define T_DONE 2 /* sync: "you got `count` buffered messages?" */
#define T_QUIT 3

static double seconds = 1.0;
static int buffered;
static int sizes[16] = {0, 64, 1024, 16384, 65536}, nsizes = 5;
static char buf[65536], reply[65536];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void server(void)
{
	messip_cnx_t *cnx = ex_connect("tpsrv");
	messip_channel_t *ch =
		messip_channel_create(cnx, "throughput", 5000, 0);
	long got = 0;

	EX_CHECK(ch != NULL);
	for (;;) {
		int32_t type;
		int r = messip_receive(ch, &type, buf, sizeof(buf), 30000);

		EX_CHECK(r != MESSIP_MSG_TIMEOUT && r != -1);
		if (r == MESSIP_MSG_NOREPLY) {
			got++;
			continue;
		}
		if (r < 0)
			continue; /* DISCONNECT */
		if (type == T_DONE) {
			long want;

			memcpy(&want, buf, sizeof(want));
			while (got < want) {
				int32_t t;

				EX_CHECK(messip_receive(ch, &t, buf,
							sizeof(buf), 10000) ==
					 MESSIP_MSG_NOREPLY);
				got++;
			}
			got = 0;
		}
		/* Echo as many bytes as came in. */
		EX_CHECK(messip_reply(ch, r, 0, buf, ch->datalenr, 5000) == 0);
		if (type == T_QUIT)
			break;
	}
	messip_disconnect(cnx, 1000);
}

static void run_sync(messip_channel_t *ch, int size)
{
	double t0 = now(), t;
	long n = 0;

	do {
		int32_t answer;

		EX_CHECK(messip_send(ch, T_DATA, buf, size, &answer, reply,
				     sizeof(reply), 5000) == 0);
		EX_CHECK(ch->datalen == size);
		n++;
	} while ((t = now() - t0) < seconds);
	printf("sync      %6d bytes: %9.0f round trips/s  %8.1f MB/s\n", size,
	       n / t, 2.0 * n * size / t / 1e6);
}

static void run_buffered(messip_channel_t *ch, int size)
{
	double t0 = now(), t;
	int32_t answer;
	long n = 0;

	do {
		EX_CHECK(messip_buffered_send(ch, T_DATA, buf, size, 5000) >=
			 0);
		n++;
	} while (now() - t0 < seconds);
	memcpy(reply, &n, sizeof(n));
	EX_CHECK(messip_send(ch, T_DONE, reply, sizeof(n), &answer, NULL, 0,
			     30000) == 0);
	t = now() - t0;
	printf("buffered  %6d bytes: %9.0f messages/s     %8.1f MB/s\n", size,
	       n / t, 1.0 * n * size / t / 1e6);
}

static void client(void)
{
	messip_cnx_t *cnx = ex_connect("tpcli");
	messip_channel_t *ch = messip_channel_locate(cnx, "throughput", 5000);
	int32_t answer;

	EX_CHECK(ch != NULL);
	for (int i = 0; i < nsizes; i++) {
		if (buffered)
			run_buffered(ch, sizes[i]);
		else
			run_sync(ch, sizes[i]);
	}
	EX_CHECK(messip_send(ch, T_QUIT, NULL, 0, &answer, NULL, 0, 5000) == 0);
	messip_disconnect(cnx, 1000);
}

int main(int argc, char **argv)
{
	int opt, n = 0;
	pid_t s, c;

	while ((opt = getopt(argc, argv, "t:b")) != -1) {
		if (opt == 't') {
			seconds = atof(optarg);
		} else if (opt == 'b') {
			buffered = 1;
		} else {
			fprintf(stderr,
				"usage: %s [-t seconds] [-b] "
				"[size ...]\n",
				argv[0]);
			return 2;
		}
	}
	for (; optind < argc && n < 16; optind++) {
		int v = atoi(argv[optind]);

		if (v < 0 || v > MESSIP_MAX_MSGLEN) {
			fprintf(stderr, "size %s: 0 to %d\n", argv[optind],
				MESSIP_MAX_MSGLEN);
			return 2;
		}
		sizes[n++] = v;
	}
	if (n)
		nsizes = n;
	if (seconds <= 0)
		seconds = 1.0;
	messip_init();
	s = ex_fork(server);
	c = ex_fork(client);
	return ex_wait(c) && ex_wait(s) ? 0 : 1;
}
