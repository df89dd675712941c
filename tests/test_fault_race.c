/*
 * test_fault_race — 64 clients hammer one server with short random
 * timeouts while the server answers some requests at once and holds
 * others for a random while, so that deadlines and replies race all the
 * time (a reply arriving just before, just after, or long after the
 * client gave up; the CANCEL crossing the reply on the wire).
 *
 * The 64 clients are threads, 16 in each of 4 processes (lighter than 64
 * processes on a 2-core machine, and the library's threading contract is
 * exactly this: one connection per thread, no locking).  Each request
 * carries (client, sequence) and a checksum in its payload; the server
 * echoes it.  Asserted:
 *   - every call has exactly one outcome: 0 with the reply to *that*
 *     request (never a late reply to an earlier one), or
 *     MESSIP_MSG_TIMEOUT with errno ETIMEDOUT; nothing else;
 *   - no call returns long after its deadline, no deadlock (the watchdog
 *     and the total bound), the whole run is bounded;
 *   - after the storm each link still works (a call with a long timeout
 *     gets its own reply), and the server saw only intact payloads and
 *     no reply errors.
 *
 * It runs on both paths: same-host clients on the channel's shared
 * memory, and on TCP (MESSIP_NO_SHM).  MP_FAULT_RACE_N sets the requests
 * per client (default 1000; 400 under ThreadSanitizer, to stay well
 * under a minute; ASan+UBSan runs the full count in about 14 s).
 */
#include "config.h"

#include <pthread.h>

#include "test_fault_util.h"

#define N_PROC	    4
#define N_THREAD    16
#define N_CLIENTS   (N_PROC * N_THREAD)
#define MAX_TMO_MS  25	  /* client timeouts: 1 .. MAX_TMO_MS */
#define MAX_HOLD_MS 30	  /* server holds: 1 .. MAX_HOLD_MS */
#define LATE_MS	    1000  /* a call may return this late (loaded 2 cores) */
#define BUDGET_MS   25000 /* per path */

struct race_result {
	long ok, timeouts, mismatched, other, late, final_ok;
	int last_errno;
	int64_t worst_over_ms;
};

static int n_req = 1000;
static struct race_result *results; /* shared: one per client */

/* ---- the server --------------------------------------------------------- */

struct held {
	int index;
	int32_t type;
	int len;
	int64_t due;
};

struct race_report {
	long received, replied, replied_late, reply_esrch, reply_err, bad;
	long held_max;
};

static void race_server(void *p)
{
	static uint8_t buf[4096];
	struct api_gate *ready = p;
	messip_cnx_t *cnx = api_connect("racesrv");
	struct held held[4096];
	struct race_report rep = {0};
	messip_channel_t *ch;
	unsigned seed = (unsigned)getpid() * 2654435761u;
	int nheld = 0, quit_idx = -1;
	int64_t end;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "r-race", 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(ready);
	end = api_now_ms() + BUDGET_MS + 5000;
	while (api_now_ms() < end) {
		int64_t now = api_now_ms(), wait = 200;
		int32_t type = 0;
		int r;

		/* Answer what is due, oldest first. */
		for (int i = 0; i < nheld;) {
			if (held[i].due > now) {
				if (held[i].due - now < wait)
					wait = held[i].due - now;
				i++;
				continue;
			}
			/* The whole message stays in receive_allmsg until
			 * the reply: echo it from there. */
			errno = 0;
			if (messip_reply(ch, held[i].index, held[i].type,
					 ch->receive_allmsg[held[i].index],
					 held[i].len, 1000) == 0)
				rep.replied_late++;
			else if (errno == ESRCH)
				rep.reply_esrch++;
			else
				rep.reply_err++;
			held[i] = held[--nheld];
		}
		if (quit_idx >= 0 && nheld == 0) {
			CHILD_CHECK(messip_reply(ch, quit_idx, 0, &rep,
						 sizeof(rep), 2000) == 0);
			break;
		}
		r = messip_receive(ch, &type, buf, sizeof(buf), (int)wait);
		if (r < 0)
			continue; /* timeout, or a client's DISCONNECT */
		if (type == FAULT_T_QUIT) {
			quit_idx = r;
			continue;
		}
		rep.received++;
		if (!fault_intact(buf, (uint32_t)ch->datalen, (uint32_t)type))
			rep.bad++;
		seed = seed * 1103515245u + 12345u;
		if ((seed >> 16) % 10 < 3 && nheld < 4096) {
			/* Held: answered 1 .. MAX_HOLD_MS ms from now. */
			held[nheld].index = r;
			held[nheld].type = type;
			held[nheld].len = ch->datalen;
			held[nheld].due =
				now + 1 + (int64_t)((seed >> 8) % MAX_HOLD_MS);
			nheld++;
			if (nheld > rep.held_max)
				rep.held_max = nheld;
			continue;
		}
		errno = 0;
		if (messip_reply(ch, r, type, buf, ch->datalen, 1000) == 0)
			rep.replied++;
		else if (errno == ESRCH)
			rep.reply_esrch++;
		else
			rep.reply_err++;
	}
	CHILD_CHECK(quit_idx >= 0);
	messip_disconnect(cnx, 1000);
}

/* ---- the clients -------------------------------------------------------- */

static void *client_thread(void *p)
{
	static __thread uint8_t out[4096], in[4096];
	int id = (int)(intptr_t)p;
	struct race_result *res = &results[id];
	unsigned seed = (unsigned)id * 2246822519u + 1;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	char name[16];

	snprintf(name, sizeof(name), "rc%d", id);
	cnx = api_connect(name);
	if (!cnx) {
		res->other = -1;
		return NULL;
	}
	ch = messip_channel_connect(cnx, "r-race", 5000);
	if (!ch) {
		res->other = -2;
		messip_disconnect(cnx, 1000);
		return NULL;
	}
	for (int seq = 0; seq <= n_req; seq++) {
		uint32_t tag = ((uint32_t)id << 20) | (uint32_t)seq;
		uint32_t len;
		int tmo, rc, err;
		int32_t answer = -1;
		int64_t t0, dt;

		seed = seed * 1103515245u + 12345u;
		len = FAULT_MSG_HDR + (seed >> 8) % 200;
		/* The last call: a generous deadline, must get its own. */
		tmo = seq == n_req ? 5000
				   : 1 + (int)((seed >> 20) % MAX_TMO_MS);
		fault_fill(out, tag, len);
		memset(in, 0, FAULT_MSG_HDR);
		t0 = api_now_ms();
		errno = 0;
		rc = messip_send(ch, (int32_t)tag, out, (int)len, &answer, in,
				 sizeof(in), tmo);
		err = errno;
		dt = api_now_ms() - t0;
		if (dt - tmo > res->worst_over_ms)
			res->worst_over_ms = dt - tmo;
		if (dt > tmo + LATE_MS)
			res->late++;
		if (rc == 0) {
			/* The reply to this request, not a late one. */
			int mine = answer == (int32_t)tag &&
				   ch->datalen == (int32_t)len &&
				   fault_intact(in, len, tag);

			if (!mine)
				res->mismatched++;
			else if (seq == n_req)
				res->final_ok = 1;
			else
				res->ok++;
		} else if (rc == MESSIP_MSG_TIMEOUT && err == ETIMEDOUT) {
			res->timeouts++;
		} else {
			res->other++;
			res->last_errno = err;
		}
	}
	messip_channel_disconnect(ch, 1000);
	messip_disconnect(cnx, 1000);
	return NULL;
}

static void client_proc(void *p)
{
	int base = (int)(intptr_t)p * N_THREAD;
	pthread_t th[N_THREAD];

	for (int i = 0; i < N_THREAD; i++)
		CHILD_CHECK(pthread_create(&th[i], NULL, client_thread,
					   (void *)(intptr_t)(base + i)) == 0);
	for (int i = 0; i < N_THREAD; i++)
		pthread_join(th[i], NULL);
}

static void test_64_clients_timeouts_race_replies(void)
{
	struct api_gate ready;
	struct race_result tot = {0};
	struct race_report rep;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pid_t srv, cli[N_PROC];
	int64_t t0, dt;
	int32_t answer;
	int finals = 0;

	results =
		mmap(NULL, sizeof(*results) * N_CLIENTS, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(results != MAP_FAILED);
	memset(results, 0, sizeof(*results) * N_CLIENTS);
	api_gate_init(&ready);
	srv = api_fork(race_server, &ready);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	t0 = api_now_ms();
	for (int i = 0; i < N_PROC; i++)
		cli[i] = api_fork(client_proc, (void *)(intptr_t)i);
	for (int i = 0; i < N_PROC; i++)
		CU_ASSERT(api_child_ok(cli[i], BUDGET_MS));
	dt = api_now_ms() - t0;
	for (int i = 0; i < N_CLIENTS; i++) {
		struct race_result *r = &results[i];

		tot.ok += r->ok;
		tot.timeouts += r->timeouts;
		tot.mismatched += r->mismatched;
		tot.other += r->other;
		tot.late += r->late;
		finals += (int)r->final_ok;
		if (r->worst_over_ms > tot.worst_over_ms)
			tot.worst_over_ms = r->worst_over_ms;
		if (r->other)
			fprintf(stderr,
				"  client %d: %ld other outcomes, "
				"errno %d\n",
				i, r->other, r->last_errno);
	}
	fprintf(stderr,
		"  %d clients x %d requests in %lld ms: %ld replies, %ld "
		"timeouts, %ld mismatched, %ld other; %ld late (> %d ms "
		"past the deadline, worst %lld ms); %d/%d final calls ok\n",
		N_CLIENTS, n_req, (long long)dt, tot.ok, tot.timeouts,
		tot.mismatched, tot.other, tot.late, LATE_MS,
		(long long)tot.worst_over_ms, finals, N_CLIENTS);
	/* Exactly one outcome per call, each the right one. */
	CU_ASSERT_EQUAL(tot.ok + tot.timeouts, (long)N_CLIENTS * n_req);
	CU_ASSERT_EQUAL(tot.mismatched, 0);
	CU_ASSERT_EQUAL(tot.other, 0);
	CU_ASSERT_EQUAL(finals, N_CLIENTS);
	CU_ASSERT_EQUAL(tot.late, 0);
	/* The race was run: both outcomes happened. */
	CU_ASSERT(tot.ok > 0 && tot.timeouts > 0);
	CU_ASSERT(dt < BUDGET_MS);
	/* The server: intact payloads, no reply failed. */
	cnx = api_connect("racequit");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_connect(cnx, "r-race", 2000);
	CU_ASSERT_FATAL(ch != NULL);
	memset(&rep, 0, sizeof(rep));
	CU_ASSERT_EQUAL(messip_send(ch, FAULT_T_QUIT, NULL, 0, &answer, &rep,
				    sizeof(rep), 5000),
			0);
	fprintf(stderr,
		"  server: %ld received, %ld answered at once, %ld later "
		"(%ld at most held at a time), %ld bad, %ld reply errors\n",
		rep.received, rep.replied, rep.replied_late, rep.held_max,
		rep.bad, rep.reply_err);
	CU_ASSERT_EQUAL(rep.bad, 0);
	CU_ASSERT_EQUAL(rep.reply_err, 0);
	CU_ASSERT(rep.received >= tot.ok + finals);
	CU_ASSERT_EQUAL(rep.replied + rep.replied_late + rep.reply_esrch,
			rep.received);
	CU_ASSERT(rep.received <= (long)N_CLIENTS * (n_req + 1));
	CU_ASSERT(api_child_ok(srv, 5000));
	messip_disconnect(cnx, 1000);
	munmap(results, sizeof(*results) * N_CLIENTS);
	api_gate_close(&ready);
}

FAULT_BOTH_PATHS(test_64_clients_timeouts_race_replies)

static const struct mp_test_case tests[] = {
	{"64 clients x N requests, client timeouts racing server replies "
	 "(shared memory): one right outcome per call, no deadlock",
	 test_64_clients_timeouts_race_replies_shm},
	{"64 clients x N requests, client timeouts racing server replies "
	 "(TCP): one right outcome per call, no deadlock",
	 test_64_clients_timeouts_race_replies_tcp},
	MP_TEST_END};

int main(void)
{
	const char *n = getenv("MP_FAULT_RACE_N");
	int rc;

#if defined(__SANITIZE_THREAD__)
	n_req = 400;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
	n_req = 400;
#endif
#endif
	if (n && atoi(n) > 0)
		n_req = atoi(n);
	mp_test_init("test_fault_race", 90);
	api_verbose();
	api_start_mgr(2, NULL);
	rc = mp_test_main("fault_race", tests);
	api_stop_mgr();
	return rc;
}
