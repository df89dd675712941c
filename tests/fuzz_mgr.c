/*
 * fuzz_mgr — libFuzzer target for the manager's request handling
 * (mgrd/mgr_proto.c, mgr_conn.c, and what they call: mgr_state,
 * mgr_deliver), fed whole byte streams.  Linked with tests/fuzz_replay.c
 * it replays tests/corpus/mgr in `make check`.
 *
 * Each input runs against a fresh manager segment created in this process
 * and one worker played by tests/mp_mgrloop: connections are socketpairs
 * whose far end this target holds, and the worker reads them through its
 * own code (mgr_worker_serve: mgr_conn_read, mgr_proto_input, deliveries,
 * flush).  Replies are read and discarded.
 *
 * The socketpairs live in memory (tests/mp_memsock.h: the program is
 * linked with --wrap for recv, send, close, shutdown, ioctl, fcntl,
 * epoll_ctl, socketpair, getpeername, getsockname, so the manager's code
 * runs unchanged and sees a unix stream socket's partial reads, EAGAIN,
 * EOF, ECONNRESET and EPIPE) so an input costs no system call per read
 * and write.  MP_FUZZ_MGR_SOCKETS=1 in the environment makes them real
 * socketpairs again: the corpus gives the same cov and ft either way
 * (-runs=0 on a copy of tests/corpus/mgr: cov 3575, ft 21741).
 *
 * The input is a list of records (tests/mp_mgrscript.h writes them):
 *   ctl (u8): connection = ctl % 4 (3 means 0 too), action = ctl >> 2:
 *     0: u8 length, then that many bytes arrive on the connection
 *     1: u16 length (little endian), then the bytes
 *     2: the peer shuts down its writing side (EOF), then goes
 *     3: the peer closes at once
 *     4: a worker pass with the tick's timers
 *     5: u8 n: the n-th allocation from now fails (shm/mp_alloc.h's
 *        hook; 0 disarms), so out-of-memory paths are fuzzed too
 *     else: as 0
 * A connection that is not open is opened by the first record naming it,
 * so the chunking of the stream is the input's own.  Lengths past the end
 * of the input are cut to what is left.
 *
 * Checks (abort on violation), beyond ASan/UBSan's:
 *   - the worker's connection gauge in the segment equals the number of
 *     connections it holds;
 *   - after the input (allocation hook disarmed), a new connection
 *     still registers: HELLO is
 *     answered WELCOME a=0 (the manager keeps serving whatever came
 *     before);
 *   - the segment is consistent enough to be taken down (mp_mgrloop_stop)
 *     and leaves nothing behind (LeakSanitizer in the fuzzer build).
 *
 * A long run (-entropic=0 saves libFuzzer's own bookkeeping, which is
 * most of the time otherwise):
 *
 *   ./tests/fuzz_mgr -entropic=0 -runs=10000000 -print_final_stats=1 \
 *       fuzz-corpus/mgr $(top_srcdir)/tests/corpus/mgr
 *
 * Speed (2026-11-26, 60 s runs on fresh copies of the corpus, back to
 * back, 2-core box with two other fuzzers, load 3-4): 1022 and 943
 * exec/s against 421 and 433 for the real-socket harness before
 * (about 1500 against 600 executions per CPU second; kernel time 5% of
 * it instead of 47%).  What is left is the manager's own code under
 * ASan, UBSan and coverage with comparison tracing, and libFuzzer's
 * per-input work; the harness's own files are built without comparison
 * tracing (tests/hard.am).
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp_alloc.h"
#include "mp_fuzz.h"
#include "mp_memsock.h"
#include "mp_mgrloop.h"
#include "mp_mgrscript.h"
#include "mp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

struct peer {
	int fd; /* our end, -1: not open */
	struct mgr_conn *c;
};

/* Open p if it is not: 0, or -ENOMEM when the worker could not take the
 * connection (the allocation hook), which a worker survives too. */
static int peer_open(struct mp_mgrloop *h, struct peer *p)
{
	if (p->fd >= 0)
		return 0;
	p->fd = mp_mgrloop_connect(h, &p->c);
	if (p->fd == -ENOMEM) {
		p->fd = -1;
		return -ENOMEM;
	}
	if (p->fd < 0)
		FZ_FAIL("fuzz_mgr", "cannot connect: %s", strerror(-p->fd));
	return 0;
}

static void peer_gone(struct mp_mgrloop *h, struct peer *p)
{
	mp_mgrloop_release(h, p->fd);
	p->fd = -1;
	p->c = NULL;
}

/* The worker closed some connections during a pass: forget them. */
static void reap(struct mp_mgrloop *h, struct peer *peers)
{
	uint64_t held = 0, gauge;

	for (int i = 0; i < MP_SCRIPT_CONNS; i++)
		if (peers[i].fd >= 0 && !mp_mgrloop_alive(h, peers[i].c))
			peer_gone(h, &peers[i]);
	for (struct mgr_conn *c = h->w.conns; c; c = c->next)
		held++;
	gauge = __atomic_load_n(&h->st.workers[0].connections,
				__ATOMIC_RELAXED);
	if (gauge != held)
		FZ_FAIL("fuzz_mgr", "connection gauge %llu, worker holds %llu",
			(unsigned long long)gauge, (unsigned long long)held);
}

/* A fresh client must still be able to register. */
static void check_still_serving(struct mp_mgrloop *h)
{
	struct mp_wire_msg m = mp_script_msg(MP_OP_HELLO, 1), r;
	uint8_t out[MP_SCRIPT_FRAME_MAX], in[4096];
	struct peer p = {-1, NULL};
	size_t got = 0;
	int rc;

	snprintf(m.id, sizeof(m.id), "check");
	m.a = 1;
	if (peer_open(h, &p) < 0)
		FZ_FAIL("fuzz_mgr", "HELLO after the input: cannot connect");
	if (send(p.fd, out, mp_script_encode(&m, out), 0) < 0 ||
	    !mp_mgrloop_serve(h, p.c))
		FZ_FAIL("fuzz_mgr", "HELLO after the input: connection closed");
	/* Anything the worker sends first must be the WELCOME. */
	for (int i = 0; i < 100 && got < MP_WIRE_HDR_SIZE; i++) {
		got += mp_mgrloop_drain(p.fd, in + got, sizeof(in) - got);
		if (got < MP_WIRE_HDR_SIZE)
			mp_mgrloop_pass(h, 0);
	}
	rc = mp_wire_decode(in, got, 65536, &r);
	if (rc <= 0 || r.op != MP_OP_WELCOME || r.a != 0)
		FZ_FAIL("fuzz_mgr", "HELLO after the input: rc %d op %s a %d",
			rc, rc > 0 ? mp_wire_op_name(r.op) : "-",
			rc > 0 ? r.a : 0);
	/* Left open: the reset ends it with the others, and its pair goes
	 * back to the pool unburnt (no socketpair per input for this). */
	peer_gone(h, &p);
}

static struct mp_mgrloop loop;
static int loop_up;

static void loop_down(void)
{
	mp_mgrloop_stop(&loop);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct mp_mgrloop *h = &loop;
	struct fz f = {d, n};
	struct peer peers[MP_SCRIPT_CONNS];

	fz_trace_init();
	mp_mgrloop_trace = fz_trace;
	/* One segment for the whole run, put back as created after each
	 * input (mp_mgrloop_reset): inputs stay independent, and no input
	 * pays for creating a segment. */
	if (!loop_up) {
		char name[64];
		int rc;

		snprintf(name, sizeof(name), "/messip-fuzz-mgr-%d",
			 (int)getpid());
		/* In-memory connections unless real socketpairs are asked
		 * for (the same input must give the same run either way). */
		mp_memsock_on = getenv("MP_FUZZ_MGR_SOCKETS") == NULL;
		rc = mp_mgrloop_start(h, name);
		if (rc < 0)
			FZ_FAIL("fuzz_mgr", "cannot start the manager: %s",
				strerror(-rc));
		loop_up = 1;
		atexit(loop_down);
	}
	for (int i = 0; i < MP_SCRIPT_CONNS; i++)
		peers[i].fd = -1;

	while (f.n) {
		uint8_t ctl = fz_u8(&f);
		struct peer *p = &peers[(ctl & 3) % MP_SCRIPT_CONNS];
		unsigned act = ctl >> 2;
		size_t len;

		if (act == MP_SCRIPT_ALLOC) {
			mp_alloc_fail_nth(fz_u8(&f));
			continue;
		}
		if (act == MP_SCRIPT_TICK) {
			mp_mgrloop_pass(h, 1);
			reap(h, peers);
			continue;
		}
		if (act == MP_SCRIPT_EOF || act == MP_SCRIPT_RESET) {
			if (peer_open(h, p) < 0)
				continue;
			if (fz_trace)
				fprintf(stderr, "conn %d: %s\n",
					(int)(p - peers),
					act == MP_SCRIPT_EOF ? "eof" : "reset");
			if (act == MP_SCRIPT_EOF)
				mp_mgrloop_feed(h, p->c, p->fd, NULL, 0, 1);
			if (mp_mgrloop_alive(h, p->c)) {
				/* Gone for good: the worker must close it. */
				if (mp_mgrloop_hangup(h, p->fd, p->c))
					FZ_FAIL("fuzz_mgr",
						"connection outlived its peer");
				p->fd = -1;
				p->c = NULL;
			} else {
				peer_gone(h, p);
			}
			reap(h, peers);
			continue;
		}
		len = act == MP_SCRIPT_DATA16 ? fz_u16(&f) : fz_u8(&f);
		if (len > f.n)
			len = f.n;
		if (peer_open(h, p) < 0) {
			f.p += len;
			f.n -= len;
			continue;
		}
		if (fz_trace)
			fprintf(stderr, "conn %d: %zu bytes\n",
				(int)(p - peers), len);
		mp_mgrloop_feed(h, p->c, p->fd, f.p, len, 0);
		f.p += len;
		f.n -= len;
		reap(h, peers);
	}
	mp_alloc_fail_nth(0);
	check_still_serving(h);
	reap(h, peers);
	/* The reset closes what the worker still holds; the pairs go back
	 * to the pool. */
	for (int i = 0; i < MP_SCRIPT_CONNS; i++)
		if (peers[i].fd >= 0)
			mp_mgrloop_release(h, peers[i].fd);
	mp_mgrloop_reset(h);
	return 0;
}
