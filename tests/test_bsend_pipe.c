/*
 * test_bsend_pipe — pipelined buffered sends through the manager
 * (doc/protocol.md, "Buffered messages"): a stream of messip_buffered_send
 * returns before the manager's answers, the library keeps each message
 * until the manager confirms it and sends it again after a resume.  What
 * must hold, with real processes over TCP (MESSIP_NO_SHM=1 everywhere, so
 * that buffered messages take the manager and not the shared segment):
 *
 *   - each worker killed -9 in turn while a client streams: the server
 *     receives every message whose send returned success exactly once, in
 *     order (exact count, no duplicate, no gap);
 *   - a full ring while sends are pipelined: the sender waits, gets
 *     ETIMEDOUT at its deadline with nothing of that call queued, and
 *     goes on when the server makes room;
 *   - two senders overrunning each other's credit: a call that times out
 *     queued nothing, even behind pipelined frames parked at the manager;
 *   - a coalesced burst whose sender then makes no call: the library's
 *     flusher writes its tail (within ~150 us, asserted < 500 ms); one
 *     whose sender calls exit() at once: written on the way out;
 *   - several senders overrunning the credit of one small ring: nothing
 *     is lost, every sender keeps its order, nobody deadlocks.
 */
#include "config.h"

#include "test_fault_util.h"

#define T_QUIT	1
#define MSG_LEN 64
#define MARK	0x7fff0000 /* the value of a send that timed out */

/* A 64-byte message carrying v. */
struct pmsg {
	int32_t v;
	uint8_t pad[MSG_LEN - 4];
};

static int32_t psend(messip_channel_t *ch, int32_t v, int timeout_ms)
{
	struct pmsg m;

	memset(&m, 0, sizeof(m));
	m.v = v;
	return messip_buffered_send(ch, 0, &m, sizeof(m), timeout_ms);
}

/* ---- each worker killed under a pipelined stream ------------------------ */

struct ks_report {
	int32_t next, dups, gaps, events;
};

struct ks_arg {
	struct api_gate *ready;
	struct api_gate *streaming;
};

/* Receives values 0, 1, 2... ; answers T_QUIT (which carries how many
 * to expect: it comes on the direct link and may overtake the last
 * buffered ones) with its report once it has them, or after 10 s. */
static void ks_server(void *p)
{
	struct ks_arg *a = p;
	messip_cnx_t *cnx = api_connect("kssrv");
	struct ks_report rep = {0};
	messip_channel_t *ch;
	int64_t end = api_now_ms() + 50000, quit_end = 0;
	int32_t expect = 0;
	int quit = -1;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "t-kstream", 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	while (api_now_ms() < end) {
		int32_t type = 0;
		struct pmsg m;
		int r;

		if (quit >= 0 &&
		    (rep.next >= expect || api_now_ms() >= quit_end)) {
			CHILD_CHECK(messip_reply(ch, quit, 0, &rep, sizeof(rep),
						 5000) == 0);
			break;
		}
		r = messip_receive(ch, &type, &m, sizeof(m), 100);
		if (r == MESSIP_MSG_TIMEOUT)
			continue;
		CHILD_CHECK(r != -1);
		if (r == MESSIP_MSG_NOREPLY) {
			if (m.v == rep.next)
				rep.next++;
			else if (m.v < rep.next)
				rep.dups++;
			else
				rep.gaps++;
			continue;
		}
		if (r < 0) {
			rep.events++;
			continue;
		}
		CHILD_CHECK(type == T_QUIT && quit < 0);
		quit = r;
		expect = m.v;
		quit_end = api_now_ms() + 10000;
	}
	messip_disconnect(cnx, 2000);
}

static void test_workers_killed_streaming(void)
{
	struct api_gate ready, streaming;
	struct ks_arg a = {&ready, &streaming};
	struct ks_report rep = {0};
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	pid_t workers[8], srv;
	int nw, ok = 0, failed = 0, killed = 0;
	int32_t answer = 0;
	int64_t t0, kill_at[2];

	api_gate_init(&ready);
	api_gate_init(&streaming);
	srv = api_fork(ks_server, &a);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	cnx = api_connect("kscli");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_connect(cnx, "t-kstream", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	nw = fault_children_of(api_mgr.pid, workers, 8);
	CU_ASSERT_FATAL(nw == 2);
	/* Stream for 2.5 s; the workers die one after the other (the
	 * master starts a new one each time) at 0.6 and 1.4 s. */
	t0 = api_now_ms();
	kill_at[0] = t0 + 600;
	kill_at[1] = t0 + 1400;
	for (int32_t v = 0; api_now_ms() - t0 < 2500;) {
		if (killed < 2 && api_now_ms() >= kill_at[killed]) {
			CU_ASSERT(kill(workers[killed], SIGKILL) == 0);
			killed++;
		}
		if (psend(ch, v, 10000) >= 0) {
			ok++;
			v++; /* a failed value is never sent again */
		} else {
			failed++;
			fprintf(stderr, "  send %d failed: %s\n", v,
				strerror(errno));
			break;
		}
	}
	CU_ASSERT_EQUAL(killed, 2);
	CU_ASSERT_EQUAL(failed, 0);
	CU_ASSERT(messip_send(ch, T_QUIT, &ok, sizeof(ok), &answer, &rep,
			      sizeof(rep), 20000) == 0);
	fprintf(stderr,
		"  %d pipelined sends succeeded across 2 worker kills; "
		"server: %d in order, %d duplicates, %d gaps\n",
		ok, rep.next, rep.dups, rep.gaps);
	CU_ASSERT(ok > 1000); /* really a stream, across both kills */
	CU_ASSERT_EQUAL(rep.next, ok);
	CU_ASSERT_EQUAL(rep.dups, 0);
	CU_ASSERT_EQUAL(rep.gaps, 0);
	CU_ASSERT_EQUAL(rep.events, 0);
	CU_ASSERT(api_child_ok(srv, 10000));
	messip_disconnect(cnx, 2000);
	api_gate_close(&ready);
	api_gate_close(&streaming);
}

/* ---- a full ring while sends are pipelined ------------------------------ */

#define FULL_CAP 64

struct full_arg {
	struct api_gate *phase; /* child -> parent: the timeout happened */
	int32_t *shared;	/* [0]: values sent before the timeout */
};

static void full_sender(void *p)
{
	struct full_arg *a = p;
	messip_cnx_t *cnx = api_connect("fullcli");
	messip_channel_t *ch;
	int64_t t0, dt;
	int32_t v = 0, rc;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-pfull", 5000);
	CHILD_CHECK(ch);
	/* As fast as the library lets us: pipelined until the credit is
	 * gone, then the call waits for room, up to its deadline. */
	for (;;) {
		t0 = api_now_ms();
		rc = psend(ch, v, 300);
		dt = api_now_ms() - t0;
		if (rc < 0)
			break;
		v++;
		CHILD_CHECK(v <= 4 * FULL_CAP); /* the ring is bounded */
	}
	CHILD_CHECK(errno == ETIMEDOUT);
	CHILD_CHECK(dt >= 280 && dt < 3000);
	CHILD_CHECK(v >= FULL_CAP / 2);
	/* Polling the full ring: at once, not queued either. */
	t0 = api_now_ms();
	CHILD_CHECK(psend(ch, MARK + 1, 0) == -1 && errno == ETIMEDOUT);
	CHILD_CHECK(api_now_ms() - t0 < 1000);
	a->shared[0] = v;
	api_gate_signal(a->phase);
	/* The server starts taking after ~400 ms: this one waits for room,
	 * then the stream goes on. */
	t0 = api_now_ms();
	CHILD_CHECK(psend(ch, v, 10000) >= 0);
	dt = api_now_ms() - t0;
	CHILD_CHECK(dt >= 300 && dt < 8000);
	for (int i = 1; i <= 500; i++)
		CHILD_CHECK(psend(ch, v + i, 10000) >= 0);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_full_ring_pipelined(void)
{
	messip_cnx_t *cnx = api_connect("fullsrv");
	int32_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct api_gate phase;
	struct full_arg a = {&phase, shared};
	messip_channel_t *ch;
	int32_t next = 0, sent, bad = 0, marks = 0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL && shared != MAP_FAILED);
	ch = messip_channel_create(cnx, "t-pfull", 2000, FULL_CAP);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&phase);
	pid = api_fork(full_sender, &a);
	CU_ASSERT_FATAL(api_gate_wait(&phase, 15000));
	sent = shared[0];
	api_sleep_ms(400);
	/* 0 .. sent + 500, each once and in order; never a timed-out one
	 * (the value sent then was used again for the next success). */
	for (;;) {
		int32_t type = -1;
		struct pmsg m;
		int r = messip_receive(ch, &type, &m, sizeof(m), 3000);

		if (r == MESSIP_MSG_TIMEOUT || r == MESSIP_MSG_DISCONNECT)
			break;
		CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
		if (r != MESSIP_MSG_NOREPLY)
			break;
		if (m.v >= MARK)
			marks++;
		else if (m.v == next)
			next++;
		else
			bad++;
	}
	fprintf(stderr,
		"  %d pipelined into a ring of %d before the timeout; "
		"received %d in order, %d out of order, %d timed out ones\n",
		sent, FULL_CAP, next, bad, marks);
	CU_ASSERT_EQUAL(next, sent + 501);
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_EQUAL(marks, 0);
	CU_ASSERT(api_child_ok(pid, 10000));
	api_gate_close(&phase);
	munmap(shared, 4096);
	messip_disconnect(cnx, 2000);
}

/*
 * Two senders stream into one small ring that nobody reads: each one's
 * credit (the room at its last answer) is overrun by the other, so
 * pipelined frames wait at the manager, parked, and the next call of
 * their sender must wait for them, not queue a waiting BSEND behind
 * them: that one's ETIMEDOUT would not mean "not queued".
 */
struct two_arg {
	struct api_gate *ready, *go, *done;
	int32_t *shared; /* [id]: values sent before the timeout */
	int32_t id;
};

static void two_sender(void *p)
{
	struct two_arg *a = p;
	messip_cnx_t *cnx = api_connect("twocli");
	messip_channel_t *ch;
	int64_t t0, dt = 0;
	int32_t i = 0;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-ptwo", 5000);
	CHILD_CHECK(ch);
	/* Both learn the credit of an empty ring, then stream at once. */
	CHILD_CHECK(psend(ch, a->id << 20 | i++, 2000) >= 0);
	api_gate_signal(a->ready);
	CHILD_CHECK(api_gate_wait(a->go, 10000));
	for (;; i++) {
		t0 = api_now_ms();
		if (psend(ch, a->id << 20 | i, 300) < 0)
			break;
		CHILD_CHECK(i <= 4 * FULL_CAP);
	}
	dt = api_now_ms() - t0;
	CHILD_CHECK(errno == ETIMEDOUT);
	CHILD_CHECK(dt >= 280 && dt < 3000);
	a->shared[a->id] = i;
	api_gate_signal(a->done);
	/* Stay connected until the server has read: a disconnect would
	 * not change what was queued, but keeps the test about one thing. */
	api_sleep_ms(2000);
	messip_disconnect(cnx, 2000);
}

static void test_full_ring_two_senders(void)
{
	messip_cnx_t *cnx = api_connect("twosrv");
	int32_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct api_gate ready, go, done;
	struct two_arg a[2] = {{&ready, &go, &done, shared, 0},
			       {&ready, &go, &done, shared, 1}};
	messip_channel_t *ch;
	int32_t next[2] = {0, 0};
	int bad = 0;
	pid_t pid[2];

	CU_ASSERT_FATAL(cnx != NULL && shared != MAP_FAILED);
	ch = messip_channel_create(cnx, "t-ptwo", 2000, FULL_CAP);
	CU_ASSERT_FATAL(ch != NULL);
	api_gate_init(&ready);
	api_gate_init(&go);
	api_gate_init(&done);
	for (int s = 0; s < 2; s++)
		pid[s] = api_fork(two_sender, &a[s]);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 15000));
	CU_ASSERT_FATAL(api_gate_wait(&ready, 15000));
	api_gate_signal(&go);
	api_gate_signal(&go);
	CU_ASSERT_FATAL(api_gate_wait(&done, 15000));
	CU_ASSERT_FATAL(api_gate_wait(&done, 15000));
	for (;;) {
		int32_t type = -1;
		struct pmsg m;
		int r = messip_receive(ch, &type, &m, sizeof(m), 1000);
		int s = m.v >> 20;

		if (r == MESSIP_MSG_TIMEOUT)
			break;
		if (r == MESSIP_MSG_DISCONNECT)
			continue;
		CU_ASSERT_EQUAL(r, MESSIP_MSG_NOREPLY);
		if (r != MESSIP_MSG_NOREPLY)
			break;
		if (s < 0 || s > 1 || (m.v & 0xfffff) != next[s])
			bad++;
		else
			next[s]++;
	}
	fprintf(stderr,
		"  sent before the timeout: %d and %d; received %d and %d, "
		"%d others\n",
		shared[0], shared[1], next[0], next[1], bad);
	CU_ASSERT_EQUAL(next[0], shared[0]);
	CU_ASSERT_EQUAL(next[1], shared[1]);
	CU_ASSERT_EQUAL(bad, 0);
	for (int s = 0; s < 2; s++)
		CU_ASSERT(api_child_ok(pid[s], 10000));
	api_gate_close(&ready);
	api_gate_close(&go);
	api_gate_close(&done);
	munmap(shared, 4096);
	messip_disconnect(cnx, 2000);
}

/* ---- the tail of a burst is not held back ------------------------------ */

#define BURST 50

/* A burst (coalesced: far below the size that makes the sender write),
 * then no library call for 2 s: the library's flusher must write the
 * tail.  shared[0..1]: when the last send returned (ms). */
static void burst_sender(void *p)
{
	int64_t *shared = p;
	messip_cnx_t *cnx = api_connect("burst");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-pburst", 5000);
	CHILD_CHECK(ch);
	for (int32_t i = 0; i < BURST; i++)
		CHILD_CHECK(psend(ch, i, 5000) >= 0);
	shared[0] = api_now_ms();
	api_sleep_ms(2000);
	messip_disconnect(cnx, 2000);
}

static void test_burst_tail_flushed(void)
{
	messip_cnx_t *cnx = api_connect("burstsrv");
	int64_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	messip_channel_t *ch;
	int32_t next = 0;
	int64_t last = 0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL && shared != MAP_FAILED);
	ch = messip_channel_create(cnx, "t-pburst", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	pid = api_fork(burst_sender, shared);
	while (next < BURST) {
		int32_t type = -1;
		struct pmsg m;
		int r = messip_receive(ch, &type, &m, sizeof(m), 1500);

		if (r != MESSIP_MSG_NOREPLY || m.v != next)
			break;
		next++;
	}
	last = api_now_ms();
	fprintf(stderr,
		"  %d of a %d-message burst received, the last %lld ms after "
		"its send returned (the sender then made no call for 2 s)\n",
		next, BURST, (long long)(last - shared[0]));
	CU_ASSERT_EQUAL(next, BURST);
	CU_ASSERT(last - shared[0] < 500);
	CU_ASSERT(api_child_ok(pid, 10000));
	munmap(shared, 4096);
	messip_disconnect(cnx, 2000);
}

/* A burst, then exit() at once: the library writes the tail on the way
 * out (its flusher thread dies with the process). */
static void exit_sender(void *p)
{
	messip_cnx_t *cnx = api_connect("exiter");
	messip_channel_t *ch;

	(void)p;
	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-pexit", 5000);
	CHILD_CHECK(ch);
	for (int32_t i = 0; i < BURST; i++)
		CHILD_CHECK(psend(ch, i, 5000) >= 0);
	exit(0);
}

static void test_burst_then_exit(void)
{
	messip_cnx_t *cnx = api_connect("exitsrv");
	messip_channel_t *ch;
	int32_t next = 0;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-pexit", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	pid = api_fork(exit_sender, NULL);
	CU_ASSERT(api_child_ok(pid, 10000));
	for (;;) {
		int32_t type = -1;
		struct pmsg m;
		int r = messip_receive(ch, &type, &m, sizeof(m), 1000);

		if (r == MESSIP_MSG_DISMISSED || r == MESSIP_MSG_DISCONNECT)
			continue;
		if (r != MESSIP_MSG_NOREPLY || m.v != next)
			break;
		next++;
	}
	fprintf(stderr, "  %d of a %d-message burst before exit() received\n",
		next, BURST);
	CU_ASSERT_EQUAL(next, BURST);
	messip_disconnect(cnx, 2000);
}

/* ---- several senders overrunning the credit ----------------------------- */

#define N_SENDERS 4
#define N_EACH	  3000

static void over_sender(void *p)
{
	int32_t id = (int32_t)(intptr_t)p;
	messip_cnx_t *cnx = api_connect("over");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-pover", 5000);
	CHILD_CHECK(ch);
	for (int32_t i = 0; i < N_EACH; i++)
		CHILD_CHECK(psend(ch, id << 20 | i, 20000) >= 0);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_senders_overrun_credit(void)
{
	messip_cnx_t *cnx = api_connect("oversrv");
	messip_channel_t *ch;
	int32_t next[N_SENDERS] = {0};
	int bad = 0, total = 0, disc = 0;
	pid_t pid[N_SENDERS];

	CU_ASSERT_FATAL(cnx != NULL);
	/* Each sender's credit is the room the ring had at its last answer:
	 * together they overrun it, and the manager parks the excess. */
	ch = messip_channel_create(cnx, "t-pover", 2000, 32);
	CU_ASSERT_FATAL(ch != NULL);
	for (int s = 0; s < N_SENDERS; s++)
		pid[s] = api_fork(over_sender, (void *)(intptr_t)s);
	api_sleep_ms(300); /* they fill the ring and wait */
	while (total < N_SENDERS * N_EACH || disc < N_SENDERS) {
		int32_t type = -1;
		struct pmsg m;
		int r = messip_receive(ch, &type, &m, sizeof(m), 10000);
		int s;

		if (r == MESSIP_MSG_DISCONNECT) {
			disc++;
			continue;
		}
		if (r != MESSIP_MSG_NOREPLY) {
			CU_FAIL("unexpected receive outcome");
			fprintf(stderr, "  receive %d (%s) after %d\n", r,
				strerror(errno), total);
			break;
		}
		total++;
		s = m.v >> 20;
		if (s < 0 || s >= N_SENDERS || (m.v & 0xfffff) != next[s])
			bad++;
		else
			next[s]++;
		if (total % 1000 == 0)
			api_sleep_ms(20); /* a slow server now and then */
	}
	fprintf(stderr,
		"  %d senders x %d through a ring of 32: %d received, "
		"%d out of order\n",
		N_SENDERS, N_EACH, total, bad);
	CU_ASSERT_EQUAL(total, N_SENDERS * N_EACH);
	CU_ASSERT_EQUAL(bad, 0);
	for (int s = 0; s < N_SENDERS; s++) {
		CU_ASSERT_EQUAL(next[s], N_EACH);
		CU_ASSERT(api_child_ok(pid[s], 20000));
	}
	messip_disconnect(cnx, 2000);
}

static const struct mp_test_case tests[] = {
	{"pipelined stream, each worker killed -9: every success exactly "
	 "once, in order",
	 test_workers_killed_streaming},
	{"pipelined sends into a full ring: ETIMEDOUT at the deadline, "
	 "nothing queued, then on",
	 test_full_ring_pipelined},
	{"two pipelined senders fill a ring: each call that times out "
	 "queued nothing",
	 test_full_ring_two_senders},
	{"the tail of a coalesced burst goes out with no further call",
	 test_burst_tail_flushed},
	{"a coalesced burst, then exit(): the tail is written on the way out",
	 test_burst_then_exit},
	{"several senders overrun the credit: nothing lost, no deadlock",
	 test_senders_overrun_credit},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_bsend_pipe", 120);
	api_verbose();
	fault_tcp_only(1); /* through the manager, not the shared segment */
	api_start_mgr(2, NULL);
	rc = mp_test_main("bsend_pipe", tests);
	api_stop_mgr();
	return rc;
}
