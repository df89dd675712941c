/*
 * bench_chseg — the channel segment's fast path against its floors, all
 * measured in the same run (make bench, or tests/bench_chseg [seconds]).
 *
 * Baselines, between two processes over a MAP_SHARED page:
 *   - spin ping-pong: two processes flip one word, busy-waiting (the
 *     floor: the cost of moving a cache line there and back);
 *   - the same carrying 64 bytes: before it flips the word, each side
 *     copies the other's 64-byte message (a line of its own) into its
 *     own, as a copying round trip does: the floor of a round trip that
 *     moves 64 bytes each way.  On a 2-vCPU EPYC VM it runs at 0.35-0.40
 *     of the word flip (a second line each way, fetched after the word
 *     says it is ready, and taken back for writing);
 *   - futex ping-pong: the same, but every turn sleeps on a futex and is
 *     woken (the machine's wake-up cost);
 *   - bare SPSC ring: 64-byte records through a minimal lock-free
 *     single-producer ring, copied in and out.
 * Measured, server and client in two processes:
 *   - round trips with the copying calls (mp_chseg_call: the client copies
 *     in and out; the server copies the view into its own buffer and
 *     replies from it), request and reply of the same size;
 *   - round trips zero-copy (loan, write 8 bytes, send; the server reads 8
 *     bytes of the view and writes 8 into the loaned reply buffer; the
 *     client reads 8 bytes of the reply view): the data is produced and
 *     consumed in place, only the hand-over is measured;
 *   - the same at 64 bytes with spinning and yielding off (futex only);
 *   - 4 client processes against 1 server, aggregate round trips;
 *   - buffered 64-byte messages through the embedded ring (bsend/bpop).
 * Ratios against the targets of the fast path are printed at the end.
 *
 * Usage: bench_chseg [seconds per slice [repetitions [rt]]]; defaults
 * 0.2 and 5 (about 25 s in all); "rt" runs only the small round trips
 * and their floors, "buf" only the buffered messages and theirs.  Pairs
 * are pinned to CPUs 0 and 1 for the main table
 * (the floor is a property of the hardware, not of the scheduler), and
 * run unpinned for the rest.  On a shared or virtual machine, expect the
 * floor itself to move between slices: the ratios are taken slice by
 * slice, side by side, and summarised as median (min .. max).
 */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_chseg.h"
#include "mp_futex.h"
#include "mp_time.h"

enum { T_COPY = 1, T_ZC, T_EXIT };

/* Control page shared by the bench's processes. */
struct ctl {
	_Alignas(64) uint32_t word; /* ping-pong word */
	/* ping-pong with a payload: each side's message, a line of its own */
	_Alignas(64) uint8_t ask[64];
	_Alignas(64) uint8_t answer[64];
	_Alignas(64) uint32_t go;
	uint32_t stop;
	_Alignas(64) uint64_t count[8];
	/* bare SPSC ring */
	_Alignas(64) uint64_t head;
	_Alignas(64) uint64_t tail;
	_Alignas(64) uint8_t recs[1024][64];
};

static struct ctl *C;
static double secs = 0.2;
static int pinned; /* pairs on CPUs 0 (this process) and 1 (the child) */

/* Pin the calling process to cpu in pinned mode; otherwise let it run
 * anywhere (children inherit the parent's mask). */
static void pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	if (pinned) {
		CPU_SET(cpu, &set);
	} else {
		for (int i = 0; i < CPU_SETSIZE; i++)
			CPU_SET(i, &set);
	}
	sched_setaffinity(0, sizeof(set), &set);
}

static pid_t fork_peer(void)
{
	pid_t pid = fork();

	if (pid == 0)
		pin_self(1);
	return pid;
}

static double now_s(void)
{
	return (double)mp_time_now_ns() / 1e9;
}

static uint32_t ld(uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void st(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static void reap(pid_t pid)
{
	int status;

	waitpid(pid, &status, 0);
}

/* ---- baselines ---------------------------------------------------------- */

#define STOP 0xffffffffu

/* The payload ping-pong's copies (len bytes, at most 64): what a copying
 * call does on each side, the bytes read and written in place.  The
 * first byte carries the turn, so the copy cannot be left out. */
static void carry(uint8_t *out, const uint8_t *in, uint32_t len, uint32_t v)
{
	uint8_t tmp[64];

	if (!len)
		return;
	memcpy(tmp, in, len);
	tmp[0] = (uint8_t)(tmp[0] + v);
	memcpy(out, tmp, len);
	__asm__ __volatile__("" ::: "memory");
}

/* Child side of the ping-pong: answer every odd value with value + 1,
 * copying len bytes of the ask into the answer first. */
static void pong(int futex, uint32_t len)
{
	uint32_t v;

	for (;;) {
		while (!((v = ld(&C->word)) & 1)) {
			if (futex)
				mp_futex_wait(&C->word, v, MP_TIME_FOREVER);
			else
				mp_cpu_relax();
		}
		if (v == STOP)
			_exit(0);
		carry(C->answer, C->ask, len, v);
		st(&C->word, v + 1);
		if (futex)
			mp_futex_wake(&C->word, 1);
	}
}

/* Round trips per second flipping one word, each side copying len bytes
 * (0 or up to 64: one line each way) of the other's message into its own
 * before it flips: the floor for a round trip carrying len bytes. */
static double pingpong(int futex, uint32_t len)
{
	uint32_t v = 0;
	double t0, t;
	uint64_t n = 0;
	pid_t pid;

	C->word = 0;
	pid = fork_peer();
	if (pid == 0)
		pong(futex, len);
	t0 = now_s();
	do {
		for (int k = 0; k < 64; k++) {
			carry(C->ask, C->answer, len, v);
			st(&C->word, v + 1);
			if (futex)
				mp_futex_wake(&C->word, 1);
			while ((v = ld(&C->word)) & 1) {
				if (futex)
					mp_futex_wait(&C->word, v,
						      MP_TIME_FOREVER);
				else
					mp_cpu_relax();
			}
		}
		n += 64;
		t = now_s() - t0;
	} while (t < secs);
	st(&C->word, STOP);
	if (futex)
		mp_futex_wake(&C->word, 1);
	reap(pid);
	return (double)n / t;
}

/* Bare SPSC ring of 64-byte records: the producer is a child; this
 * process consumes for secs, then drains until the producer stops. */
static double spsc(void)
{
	const uint64_t N = 1024;
	uint8_t out[64];
	uint64_t tail = 0, head_cache = 0, counted = 0, sum = 0;
	double t0, t = 0;
	pid_t pid;

	C->head = C->tail = 0;
	C->go = 0;
	C->stop = 0;
	pid = fork_peer();
	if (pid == 0) {
		uint64_t head = 0, tail_cache = 0;
		uint8_t msg[64];

		memset(msg, 7, sizeof(msg));
		while (!__atomic_load_n(&C->go, __ATOMIC_ACQUIRE))
			mp_cpu_relax();
		while (!__atomic_load_n(&C->stop, __ATOMIC_RELAXED)) {
			for (int k = 0; k < 256; k++) {
				while (head - tail_cache == N) {
					tail_cache = __atomic_load_n(
						&C->tail, __ATOMIC_ACQUIRE);
					if (head - tail_cache == N)
						mp_cpu_relax();
				}
				msg[0] = (uint8_t)head;
				memcpy(C->recs[head & (N - 1)], msg, 64);
				__atomic_store_n(&C->head, ++head,
						 __ATOMIC_RELEASE);
			}
		}
		__atomic_store_n(&C->go, 2, __ATOMIC_RELEASE);
		_exit(0);
	}
	t0 = now_s();
	__atomic_store_n(&C->go, 1, __ATOMIC_RELEASE);
	for (;;) {
		while (tail == head_cache) {
			head_cache =
				__atomic_load_n(&C->head, __ATOMIC_ACQUIRE);
			if (tail != head_cache)
				break;
			if (__atomic_load_n(&C->go, __ATOMIC_ACQUIRE) == 2 &&
			    head_cache ==
				    __atomic_load_n(&C->head, __ATOMIC_ACQUIRE))
				goto done;
			mp_cpu_relax();
		}
		memcpy(out, C->recs[tail & (N - 1)], 64);
		sum += out[0];
		__atomic_store_n(&C->tail, ++tail, __ATOMIC_RELEASE);
		if (!t && (tail & 1023) == 0 && now_s() - t0 >= secs) {
			t = now_s() - t0;
			counted = tail;
			__atomic_store_n(&C->stop, 1, __ATOMIC_RELEASE);
		}
	}
done:
	reap(pid);
	(void)sum;
	return t ? (double)counted / t : -1;
}

/* ---- chseg -------------------------------------------------------------- */

static char seg_name[64];

/* Server child: serves copy and zero-copy requests until T_EXIT. */
static pid_t server_start(int spin)
{
	int p[2], rc = -1;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork_peer();
	if (pid == 0) {
		static uint8_t buf[MP_CHSEG_MAX_MSG];
		struct mp_chseg_msg m;
		mp_chseg_t seg;
		uint8_t *rb;

		close(p[0]);
		rc = mp_chseg_create(&seg, seg_name, NULL);
		if (!spin) {
			seg.spin_ns = 0;
			seg.yield_ns = 0;
		}
		if (write(p[1], &rc, sizeof(rc)) != sizeof(rc) || rc)
			_exit(2);
		for (;;) {
			rc = mp_chseg_next(&seg, &m);
			if (rc != 1) {
				if (rc == 0)
					mp_chseg_server_wait(&seg,
							     MP_TIME_FOREVER);
				continue;
			}
			if (m.kind != MP_CHSEG_REQUEST)
				continue;
			switch (m.type) {
			case T_COPY:
				/* The classic receive: view -> buffer, and
				 * the reply from the buffer. */
				memcpy(buf, m.data, m.len);
				mp_chseg_reply(&seg, m.ticket, 0, buf, m.len);
				break;
			case T_ZC:
				rb = mp_chseg_reply_buf(&seg, m.ticket, NULL);
				if (m.len >= 8)
					memcpy(rb, m.data, 8);
				mp_chseg_reply(&seg, m.ticket, 0, rb, m.len);
				break;
			default:
				mp_chseg_reply(&seg, m.ticket, 0, NULL, 0);
				mp_chseg_close(&seg);
				_exit(0);
			}
		}
	}
	close(p[1]);
	if (pid < 0 || read(p[0], &rc, sizeof(rc)) != sizeof(rc) || rc) {
		fprintf(stderr, "bench_chseg: server failed: %d\n", rc);
		exit(1);
	}
	close(p[0]);
	return pid;
}

static void server_stop(mp_chseg_t *cl, pid_t pid)
{
	mp_chseg_call(cl, T_EXIT, NULL, 0, NULL, NULL, 0, MP_TIME_FOREVER);
	reap(pid);
}

static uint8_t req[MP_CHSEG_MAX_MSG], rep[MP_CHSEG_MAX_MSG];

static int rt_copy(mp_chseg_t *cl, uint32_t len)
{
	int32_t ans;

	return mp_chseg_call(cl, T_COPY, req, len, &ans, rep, sizeof(rep),
			     MP_TIME_FOREVER) == (int)len
		       ? 0
		       : -1;
}

static int rt_zc(mp_chseg_t *cl, uint32_t len)
{
	static uint64_t seq;
	struct mp_chseg_req r;
	uint64_t back;

	if (mp_chseg_loan(cl, &r, MP_TIME_FOREVER))
		return -1;
	seq++;
	if (len >= 8)
		memcpy(r.buf, &seq, 8);
	if (mp_chseg_send(cl, &r, T_ZC, seq, len) ||
	    mp_chseg_wait(cl, &r, MP_TIME_FOREVER))
		return -1;
	if (len >= 8) {
		memcpy(&back, r.rdata, 8);
		if (back != seq)
			return -1;
	}
	mp_chseg_done(cl, &r);
	return 0;
}

static double timed(mp_chseg_t *cl, int (*op)(mp_chseg_t *, uint32_t),
		    uint32_t len)
{
	uint64_t n = 0;
	double t0, t;

	for (int k = 0; k < 1000; k++)
		if (op(cl, len))
			return -1;
	t0 = now_s();
	do {
		for (int k = 0; k < 32; k++)
			if (op(cl, len))
				return -1;
		n += 32;
		t = now_s() - t0;
	} while (t < secs);
	return (double)n / t;
}

/* nclients children hammer the server with 64-byte copying calls. */
static double multi(int nclients, uint32_t len)
{
	pid_t pids[8];
	uint64_t sum = 0;
	double t0, t;

	C->go = 0;
	C->stop = 0;
	for (int i = 0; i < nclients; i++) {
		C->count[i] = 0;
		pids[i] = fork();
		if (pids[i] == 0) {
			mp_chseg_t cl;
			uint64_t n = 0;

			if (mp_chseg_open(&cl, seg_name))
				_exit(2);
			while (!__atomic_load_n(&C->go, __ATOMIC_ACQUIRE))
				usleep(100);
			while (!__atomic_load_n(&C->stop, __ATOMIC_ACQUIRE)) {
				if (rt_copy(&cl, len))
					_exit(3);
				n++;
			}
			__atomic_store_n(&C->count[i], n, __ATOMIC_RELEASE);
			mp_chseg_close(&cl);
			_exit(0);
		}
	}
	usleep(100000); /* all open and waiting */
	t0 = now_s();
	__atomic_store_n(&C->go, 1, __ATOMIC_RELEASE);
	usleep((useconds_t)(secs * 1e6));
	__atomic_store_n(&C->stop, 1, __ATOMIC_RELEASE);
	t = now_s() - t0;
	for (int i = 0; i < nclients; i++) {
		reap(pids[i]);
		sum += __atomic_load_n(&C->count[i], __ATOMIC_ACQUIRE);
	}
	return (double)sum / t;
}

/* Buffered 64-byte messages: a child sends, this process receives for
 * secs, then drains until the sender stops. */
static double buffered(void)
{
	struct mp_ring_rec meta;
	uint64_t got = 0, counted = 0;
	uint8_t buf[64];
	mp_chseg_t srv;
	double t0, t = 0;
	pid_t pid;
	int rc;

	rc = mp_chseg_create(&srv, seg_name, NULL);
	if (rc) {
		fprintf(stderr, "bench_chseg: create: %d\n", rc);
		exit(1);
	}
	C->go = 0;
	C->stop = 0;
	pid = fork_peer();
	if (pid == 0) {
		uint8_t msg[64];
		mp_chseg_t cl;

		memset(msg, 3, sizeof(msg));
		if (mp_chseg_open(&cl, seg_name))
			_exit(2);
		while (!__atomic_load_n(&C->go, __ATOMIC_ACQUIRE))
			mp_cpu_relax();
		while (!__atomic_load_n(&C->stop, __ATOMIC_RELAXED))
			for (int k = 0; k < 256; k++)
				if (mp_chseg_bsend(&cl, 1, msg, 64,
						   MP_TIME_FOREVER) < 0)
					_exit(3);
		mp_chseg_close(&cl);
		__atomic_store_n(&C->go, 2, __ATOMIC_RELEASE);
		_exit(0);
	}
	usleep(20000);
	t0 = now_s();
	__atomic_store_n(&C->go, 1, __ATOMIC_RELEASE);
	for (;;) {
		rc = mp_chseg_bpop(&srv, &meta, buf, sizeof(buf));
		if (rc == 1) {
			got++;
			if (!t && (got & 1023) == 0 && now_s() - t0 >= secs) {
				t = now_s() - t0;
				counted = got;
				__atomic_store_n(&C->stop, 1, __ATOMIC_RELEASE);
			}
		} else if (rc == 0) {
			if (__atomic_load_n(&C->go, __ATOMIC_ACQUIRE) == 2 &&
			    mp_chseg_bpop(&srv, &meta, buf, sizeof(buf)) == 0)
				break;
			mp_chseg_server_wait(&srv, mp_time_deadline(10));
		} else {
			break;
		}
	}
	reap(pid);
	mp_chseg_close(&srv);
	return t ? (double)counted / t : -1;
}

static void row(const char *label, double v)
{
	printf("%-46s %14.0f\n", label, v);
}

static double max2(double a, double b)
{
	return a > b ? a : b;
}

#define MAX_REPS 32

/* Ratios are taken per repetition, against the baseline measured right
 * before and after (the higher of the two), then summarised: the CPUs
 * this runs on may change speed or neighbours between repetitions. */
struct ratio {
	const char *label;
	const char *target;
	double v[MAX_REPS];
};

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void ratio_print(struct ratio *r, int n)
{
	double v[MAX_REPS];

	memcpy(v, r->v, sizeof(double) * (size_t)n);
	qsort(v, (size_t)n, sizeof(double), cmp_d);
	printf("  %-34s %6.2f  (%.2f .. %.2f)  %s\n", r->label, v[n / 2], v[0],
	       v[n - 1], r->target);
}

/* Buffered messages between two bare SPSC runs; keeps the best of each
 * in *ring and *buf, returns the slice's ratio. */
static double buffered_vs_spsc(double *ring, double *buf)
{
	double rg1 = spsc(), b = buffered(), rg2 = spsc();

	*ring = max2(*ring, max2(rg1, rg2));
	*buf = max2(*buf, b);
	return b / max2(rg1, rg2);
}

int main(int argc, char **argv)
{
	static const uint32_t sizes[] = {0, 64, 1024, 16384, 65536};
	enum { NS = 5 };
	enum {
		R_C0,
		R_Z0,
		R_C64,
		R_Z64,
		R_P64,
		R_C64P,
		R_Z64P,
		R_ZC64K,
		R_BUF,
		R_UC64,
		R_FOUR,
		R_FOUR1,
		NR
	};
	struct ratio rr[NR] = {
		{"copy 0 B / spin ping-pong", ">= 0.33", {0}},
		{"zero-copy 0 B / spin ping-pong", ">= 0.33", {0}},
		{"copy 64 B / spin ping-pong", ">= 0.33", {0}},
		{"zero-copy 64 B / spin ping-pong", ">= 0.33", {0}},
		{"64 B ping-pong / spin ping-pong", "", {0}},
		{"copy 64 B / 64 B ping-pong", ">= 0.33", {0}},
		{"zero-copy 64 B / 64 B ping-pong", ">= 0.33", {0}},
		{"zero-copy 64 KiB / copy 64 KiB", ">= 10", {0}},
		{"buffered / bare SPSC ring", ">= 0.5", {0}},
		{"unpinned copy 64 B / spin p-p", "", {0}},
		{"4 clients / futex ping-pong", ">= 1", {0}},
		{"4 clients / 1 client (unpinned)", "", {0}},
	};
	double spin = 0, spin64 = 0, futex = 0, ring = 0, buf = 0, copy[NS] = {0},
	       zc[NS] = {0}, nospin = 0;
	double u_spin = 0, u_futex = 0, u_copy = 0, u_zc = 0, four = 0;
	double s1, s2, p1, p2, x[NS], y[NS], uf, uc, f;
	int reps = 5, quick, bufonly;
	mp_chseg_t cl, cl0;
	pid_t srv, srv0;
	char l[80];

	if (argc > 1 && atof(argv[1]) > 0)
		secs = atof(argv[1]);
	if (argc > 2 && atoi(argv[2]) > 0)
		reps = atoi(argv[2]) < MAX_REPS ? atoi(argv[2]) : MAX_REPS;
	/* "rt": only the pinned small round trips and their floor, for
	 * tuning (a few seconds). */
	quick = argc > 3 && !strcmp(argv[3], "rt");
	/* "buf": only the pinned buffered messages and their floor. */
	bufonly = argc > 3 && !strcmp(argv[3], "buf");
	C = mmap(NULL, sizeof(*C), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (C == MAP_FAILED)
		return 1;

	/*
	 * Pinned pairs: the floor of the hardware, and the fast path on it,
	 * each process on its own CPU.  The machine may be shared (other
	 * jobs come and go, and a VM's two CPUs may be two cores or two
	 * threads of one core from one moment to the next), so every case
	 * runs in short slices, repeated; the table shows the best slice of
	 * each case, the ratios compare slices taken side by side.
	 */
	for (int k = 0; k < reps; k++) {
		pinned = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
		pin_self(0);
		if (bufonly) {
			snprintf(seg_name, sizeof(seg_name),
				 "/messip-bench-chseg-%ld-a", (long)getpid());
			rr[R_BUF].v[k] = buffered_vs_spsc(&ring, &buf);
			continue;
		}
		snprintf(seg_name, sizeof(seg_name),
			 "/messip-bench-chseg-%ld-a", (long)getpid());
		srv = server_start(1);
		snprintf(seg_name, sizeof(seg_name),
			 "/messip-bench-chseg-%ld-b", (long)getpid());
		srv0 = server_start(0);
		if (mp_chseg_open(&cl0, seg_name))
			return 1;
		cl0.spin_ns = 0; /* futex only, on both sides */
		cl0.yield_ns = 0;
		snprintf(seg_name, sizeof(seg_name),
			 "/messip-bench-chseg-%ld-a", (long)getpid());
		if (mp_chseg_open(&cl, seg_name))
			return 1;
		if (k == 0)
			printf("bench_chseg: %d x %.2f s per case, spin_ns "
			       "%lld, yield_ns %lld (MESSIP_SPIN_NS, "
			       "MESSIP_YIELD_NS)\n",
			       reps, secs, (long long)cl.spin_ns,
			       (long long)cl.yield_ns);
		s1 = pingpong(0, 0);
		p1 = pingpong(0, 64);
		for (int i = 0; i < 2; i++) {
			x[i] = timed(&cl, rt_copy, sizes[i]);
			y[i] = timed(&cl, rt_zc, sizes[i]);
		}
		p2 = pingpong(0, 64);
		s2 = pingpong(0, 0);
		spin = max2(spin, max2(s1, s2));
		spin64 = max2(spin64, max2(p1, p2));
		rr[R_C0].v[k] = x[0] / max2(s1, s2);
		rr[R_Z0].v[k] = y[0] / max2(s1, s2);
		rr[R_C64].v[k] = x[1] / max2(s1, s2);
		rr[R_Z64].v[k] = y[1] / max2(s1, s2);
		rr[R_P64].v[k] = max2(p1, p2) / max2(s1, s2);
		rr[R_C64P].v[k] = x[1] / max2(p1, p2);
		rr[R_Z64P].v[k] = y[1] / max2(p1, p2);
		for (int i = 2; i < (quick ? 2 : NS); i++) {
			x[i] = timed(&cl, rt_copy, sizes[i]);
			y[i] = timed(&cl, rt_zc, sizes[i]);
		}
		for (int i = 0; i < (quick ? 2 : NS); i++) {
			copy[i] = max2(copy[i], x[i]);
			zc[i] = max2(zc[i], y[i]);
		}
		if (!quick) {
			rr[R_ZC64K].v[k] = y[4] / x[4];
			futex = max2(futex, pingpong(1, 0));
			nospin = max2(nospin, timed(&cl0, rt_copy, 64));
		}
		server_stop(&cl, srv);
		mp_chseg_close(&cl);
		server_stop(&cl0, srv0);
		mp_chseg_close(&cl0);
		if (quick)
			continue;
		rr[R_BUF].v[k] = buffered_vs_spsc(&ring, &buf);

		/* Unpinned: wherever the scheduler puts them, other load
		 * included; and 4 clients with 1 server on whatever CPUs
		 * there are. */
		pinned = 0;
		pin_self(0);
		s1 = pingpong(0, 0);
		uf = pingpong(1, 0);
		srv = server_start(1);
		if (mp_chseg_open(&cl, seg_name))
			return 1;
		uc = timed(&cl, rt_copy, 64);
		u_zc = max2(u_zc, timed(&cl, rt_zc, 64));
		f = multi(4, 64);
		s2 = pingpong(0, 0);
		server_stop(&cl, srv);
		mp_chseg_close(&cl);
		u_spin = max2(u_spin, max2(s1, s2));
		u_futex = max2(u_futex, uf);
		u_copy = max2(u_copy, uc);
		four = max2(four, f);
		rr[R_UC64].v[k] = uc / max2(s1, s2);
		rr[R_FOUR].v[k] = f / uf;
		rr[R_FOUR1].v[k] = f / uc;
	}

	if (bufonly) {
		printf("spsc %.0f buffered %.0f\n", ring, buf);
		ratio_print(&rr[R_BUF], reps);
		return 0;
	}
	if (quick) {
		printf("spin %.0f spin64 %.0f copy0 %.0f zc0 %.0f copy64 %.0f "
		       "zc64 %.0f\n",
		       spin, spin64, copy[0], zc[0], copy[1], zc[1]);
		for (int i = R_C0; i <= R_Z64P; i++)
			ratio_print(&rr[i], reps);
		return 0;
	}
	printf("\n%-46s %14s\n", "pinned pairs (CPU 0 and 1), best slice",
	       "per second");
	row("baseline: spin ping-pong, round trips", spin);
	row("baseline: spin ping-pong carrying 64 B", spin64);
	row("baseline: futex ping-pong, round trips", futex);
	row("baseline: bare SPSC ring, 64 B messages", ring);
	for (int i = 0; i < NS; i++) {
		snprintf(l, sizeof(l), "chseg round trip, copy, %u B",
			 sizes[i]);
		row(l, copy[i]);
		snprintf(l, sizeof(l), "chseg round trip, zero-copy, %u B",
			 sizes[i]);
		row(l, zc[i]);
	}
	row("chseg round trip, copy, 64 B, futex only", nospin);
	row("chseg buffered, 64 B messages", buf);
	printf("\n%-46s %14s\n", "unpinned, best slice", "per second");
	row("baseline: spin ping-pong, round trips", u_spin);
	row("baseline: futex ping-pong, round trips", u_futex);
	row("chseg round trip, copy, 64 B", u_copy);
	row("chseg round trip, zero-copy, 64 B", u_zc);
	row("chseg 4 clients x 1 server, copy, 64 B", four);

	printf("\nratios, side by side: median (min .. max) of %d, target\n",
	       reps);
	for (int i = 0; i < NR; i++)
		ratio_print(&rr[i], reps);
	return 0;
}
