/*
 * test_ring — the MPSC record ring (shm/mp_ring.c).
 *
 * Single-process tests pin down the contract: limits and attach checks,
 * deadlines (empty pop, full push), capacity in records and in bytes, the
 * value push returns, wrap-around with every byte verified, 0-byte and
 * 64 KiB records, cursors (peek / release).  Multi-process tests share a
 * MAP_SHARED|MAP_ANONYMOUS mapping made before fork: four producers and a
 * consumer moving a million records; producers SIGKILLed at random points;
 * several producers blocked on a full ring (the consumer committing with
 * plain stores and the producers fencing it before they sleep, and with
 * seq_cst stores).  Fault tests reproduce the
 * crash states the ring must repair (a producer dead holding the lock,
 * dead between its two commit stores; a consumer dead between its two)
 * and scribble on a live ring.
 *
 * The crash-state tests find the ring's private fields by behaviour, not
 * by layout: the lock is the bytes of a freshly initialised mp_lock, head
 * and head_seq are the two 64-bit words of the header that a push moves by
 * the record's size and by one, and so on; each search must find exactly
 * one candidate.  The scribbling test leaves the pthread mutex alone:
 * glibc may abort or hang on a mutex whose type bits are garbage (PI
 * mutex paths), which is mp_lock's domain, not the ring's.
 *
 * MP_VALGRIND=1 scales the stress counts down (memcheck is ~50x slower).
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_futex.h"
#include "mp_lock.h"
#include "mp_proc.h"
#include "mp_ring.h"
#include "mp_test.h"
#include "mp_time.h"

#define MS 1000000LL

static int slow_env; /* under valgrind: smaller counts */

/* ---- helpers -------------------------------------------------------- */

static void *shared_map(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int64_t in_ms(int ms)
{
	return mp_time_now_ns() + ms * MS;
}

/* Payload byte i of record `counter` from `sender`. */
static inline uint8_t pat(uint32_t sender, uint64_t counter, uint32_t i)
{
	return (uint8_t)(counter * 131 + sender * 7 + i * 13 + (i >> 8));
}

static void fill(uint8_t *buf, uint32_t len, uint32_t sender, uint64_t counter)
{
	for (uint32_t i = 0; i < len; i++)
		buf[i] = pat(sender, counter, i);
}

static int pat_ok(const uint8_t *buf, uint32_t len, uint32_t sender,
		  uint64_t counter)
{
	for (uint32_t i = 0; i < len; i++)
		if (buf[i] != pat(sender, counter, i))
			return 0;
	return 1;
}

/* Length of record `counter` from `sender` in the stress tests: mostly
 * small, one in 64 up to 2 KiB. */
static uint32_t stress_len(uint32_t sender, uint64_t counter)
{
	uint64_t h = (counter + 1) * 0x9e3779b97f4a7c15ull ^ sender;

	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (h & 63) == 0 ? (uint32_t)(h >> 8) % 2049
			     : (uint32_t)(h >> 8) % 65;
}

static uint64_t last_seq; /* seq of the last record push_rec() queued */

/* Push record `counter` of `sender` (type = counter, id = "p<sender>"). */
static int push_rec(mp_ring_t *r, uint32_t sender, uint64_t counter,
		    uint32_t len, int64_t deadline, uint8_t *buf)
{
	struct mp_ring_rec m = {.type = (int32_t)counter, .sender = sender};

	int rc;

	snprintf(m.id, sizeof(m.id), "p%u", sender);
	fill(buf, len, sender, counter);
	rc = mp_ring_push(r, &m, buf, len, deadline);
	if (rc >= 0)
		last_seq = m.seq;
	return rc;
}

/* Check a popped record against what push_rec would have made. */
static int rec_ok(const struct mp_ring_rec *m, const uint8_t *buf, int rc,
		  uint32_t want_len)
{
	char id[MP_RING_ID_LEN];

	snprintf(id, sizeof(id), "p%u", m->sender);
	return rc >= 0 && (uint32_t)rc == m->len && m->len == want_len &&
	       strcmp(m->id, id) == 0 &&
	       pat_ok(buf, m->len, m->sender, (uint64_t)m->type);
}

/* A ring on the heap (so ASan bounds the memory exactly), or shared. */
struct tring {
	mp_ring_t r;
	void *mem;
	size_t size;
	int shared;
};

static int tring_make(struct tring *t, uint32_t data_bytes,
		      uint32_t max_records, uint32_t max_payload, int shared)
{
	t->size = mp_ring_size(data_bytes);
	t->shared = shared;
	t->mem = shared ? shared_map(t->size) : aligned_alloc(64, t->size);
	if (!t->mem)
		return -ENOMEM;
	return mp_ring_init(&t->r, t->mem, t->size, data_bytes, max_records,
			    max_payload);
}

static void tring_free(struct tring *t)
{
	if (t->shared)
		munmap(t->mem, t->size);
	else
		free(t->mem);
}

/* Bytes of the ring's header (before the data area). */
static size_t hdr_bytes(const struct tring *t)
{
	return (size_t)(t->r.data - (uint8_t *)t->mem);
}

/* Offset of the ring's lock: the bytes of a fresh mp_lock (ring fresh
 * too).  -1 unless exactly one place matches. */
static long find_lock(const struct tring *t)
{
	mp_lock_sh_t fresh;
	long found = -1;
	int n = 0;

	mp_lock_init(&fresh);
	for (size_t off = 0; off + sizeof(fresh) <= hdr_bytes(t); off += 8)
		if (memcmp((uint8_t *)t->mem + off, &fresh, sizeof(fresh)) ==
		    0) {
			found = (long)off;
			n++;
		}
	mp_lock_destroy(&fresh);
	return n == 1 ? found : -1;
}

/* Index of the one 64-bit header word that moved by `delta` between
 * snapshots a and b; -1 unless exactly one did. */
static long find_word(const uint64_t *a, const uint64_t *b, size_t words,
		      uint64_t delta)
{
	long found = -1;
	int n = 0;

	for (size_t i = 0; i < words; i++)
		if (b[i] - a[i] == delta) {
			found = (long)i;
			n++;
		}
	return n == 1 ? found : -1;
}

/* A child that takes the ring's lock and dies holding it. */
static void die_holding_lock(struct tring *t, long lock_off)
{
	pid_t pid = mp_test_fork();
	int st;

	if (pid == 0) {
		mp_lock_acquire((mp_lock_sh_t *)((uint8_t *)t->mem + lock_off),
				MP_TIME_FOREVER);
		raise(SIGKILL);
		_exit(1);
	}
	st = pid > 0 ? mp_test_wait(pid, 5000) : -1;
	CU_ASSERT(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

/* ---- limits --------------------------------------------------------- */

static void test_sizes_and_attach(void)
{
	struct tring t;
	mp_ring_t r2;
	uint8_t junk[4096];

	CU_ASSERT(mp_ring_size(0) == 0);
	CU_ASSERT(mp_ring_size(1000) == 0); /* not a power of two */
	CU_ASSERT(mp_ring_size(32) == 0);   /* below one header */
	CU_ASSERT(mp_ring_size(4096) > 4096);
	CU_ASSERT(mp_ring_min_data_bytes(0) == 64);
	CU_ASSERT(mp_ring_min_data_bytes(65536) == 131072);
	CU_ASSERT(mp_ring_min_data_bytes(65537) == 0);
	CU_ASSERT(mp_ring_min_data_bytes(1000) == 2048);

	t.mem = aligned_alloc(64, mp_ring_size(131072));
	CU_ASSERT_FATAL(t.mem != NULL);
	/* record larger than the data area, bad counts, short memory */
	CU_ASSERT(mp_ring_init(&t.r, t.mem, mp_ring_size(4096), 4096, 8,
			       4096) == -EINVAL);
	CU_ASSERT(mp_ring_init(&t.r, t.mem, mp_ring_size(4096), 4096, 0, 100) ==
		  -EINVAL);
	CU_ASSERT(mp_ring_init(&t.r, t.mem, mp_ring_size(4096), 3000, 8, 100) ==
		  -EINVAL);
	CU_ASSERT(mp_ring_init(&t.r, t.mem, mp_ring_size(4096) - 1, 4096, 8,
			       100) == -EINVAL);
	CU_ASSERT(mp_ring_init(&t.r, (uint8_t *)t.mem + 4, mp_ring_size(4096),
			       4096, 8, 100) == -EINVAL);
	CU_ASSERT(mp_ring_init(&t.r, t.mem, mp_ring_size(131072), 131072, 8,
			       65537) == -EINVAL);
	CU_ASSERT(mp_ring_init(&t.r, t.mem, mp_ring_size(131072), 131072, 8,
			       65536) == 0);
	CU_ASSERT(t.r.data_bytes == 131072 && t.r.mask == 131071 &&
		  t.r.max_records == 8 && t.r.max_payload == 65536 &&
		  t.r.spin > 0);

	/* attach sees the same limits; too little memory is refused */
	CU_ASSERT(mp_ring_attach(&r2, t.mem, mp_ring_size(131072)) == 0);
	CU_ASSERT(r2.data_bytes == 131072 && r2.max_records == 8 &&
		  r2.max_payload == 65536 && r2.data == t.r.data);
	CU_ASSERT(mp_ring_attach(&r2, t.mem, mp_ring_size(65536)) == -EBADMSG);
	CU_ASSERT(mp_ring_attach(&r2, t.mem, 16) == -EBADMSG);
	free(t.mem);

	/* garbage is not a ring; neither is a ring whose sizes were bent */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)mp_test_rand();
	CU_ASSERT(mp_ring_attach(&r2, junk, sizeof(junk)) == -EBADMSG);
	CU_ASSERT_FATAL(tring_make(&t, 4096, 8, 100, 0) == 0);
	for (size_t off = 4; off < 24; off += 4) {
		uint32_t save, *w = (uint32_t *)((uint8_t *)t.mem + off);

		save = *w;
		*w = save ^ 0x80000001u;
		CU_ASSERT(mp_ring_attach(&r2, t.mem, t.size) == -EBADMSG);
		*w = save;
	}
	CU_ASSERT(mp_ring_attach(&r2, t.mem, t.size) == 0);
	tring_free(&t);
}

/* ---- deadlines ------------------------------------------------------ */

static void test_empty_pop_times_out(void)
{
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[16];
	uint64_t cur;
	int64_t t0, el;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 8, 100, 0) == 0);
	t0 = mp_time_now_ns();
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), t0 + 100 * MS) ==
		  -ETIMEDOUT);
	el = mp_time_now_ns() - t0;
	CU_ASSERT(el >= 100 * MS);
	CU_ASSERT(el < 600 * MS);

	/* a poll (deadline now) returns at once */
	t0 = mp_time_now_ns();
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), t0) == -ETIMEDOUT);
	CU_ASSERT(mp_time_now_ns() - t0 < 100 * MS);

	/* peek waits the same way and leaves the cursor alone */
	cur = mp_ring_tail(&t.r);
	t0 = mp_time_now_ns();
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf),
			       t0 + 50 * MS) == -ETIMEDOUT);
	el = mp_time_now_ns() - t0;
	CU_ASSERT(el >= 50 * MS && el < 550 * MS);
	CU_ASSERT(cur == mp_ring_tail(&t.r));
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	tring_free(&t);
}

static void test_full_push_times_out(void)
{
	struct tring t;
	struct mp_ring_rec m = {.type = 5};
	uint8_t buf[100] = {0};
	int64_t t0, el;
	int rc;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 3, 100, 0) == 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT(mp_ring_push(&t.r, &m, buf, 10, 0) == i);
	t0 = mp_time_now_ns();
	rc = mp_ring_push(&t.r, &m, buf, 10, t0 + 100 * MS);
	el = mp_time_now_ns() - t0;
	CU_ASSERT(rc == -ETIMEDOUT);
	CU_ASSERT(el >= 100 * MS && el < 600 * MS);
	CU_ASSERT(mp_ring_count(&t.r) == 3);
	/* a poll on a full ring fails at once */
	t0 = mp_time_now_ns();
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 10, t0) == -ETIMEDOUT);
	CU_ASSERT(mp_time_now_ns() - t0 < 100 * MS);
	/* nothing was queued by the failed pushes: exactly three come out,
	 * with consecutive seqs */
	for (int i = 0; i < 3; i++) {
		CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 10);
		CU_ASSERT(m.seq == (uint64_t)i);
	}
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == -ETIMEDOUT);
	/* and the next push gets the next seq */
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 1, 0) == 0);
	CU_ASSERT(m.seq == 3);
	tring_free(&t);
}

/* ---- capacity and counts -------------------------------------------- */

static void test_capacity_records_and_bytes(void)
{
	struct tring t;
	struct mp_ring_rec m = {0};
	uint8_t buf[1000] = {0};

	/* bound by records: 5 empty records in 4 KiB */
	CU_ASSERT_FATAL(tring_make(&t, 4096, 5, 1000, 0) == 0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT(mp_ring_push(&t.r, &m, NULL, 0, 0) == i);
	CU_ASSERT(mp_ring_push(&t.r, &m, NULL, 0, 0) == -ETIMEDOUT);
	CU_ASSERT(mp_ring_count(&t.r) == 5);
	CU_ASSERT(mp_ring_pop(&t.r, &m, NULL, 0, 0) == 0);
	CU_ASSERT(mp_ring_push(&t.r, &m, NULL, 0, 0) == 4);
	CU_ASSERT(mp_ring_push(&t.r, &m, NULL, 0, 0) == -ETIMEDOUT);
	tring_free(&t);

	/* bound by bytes: 1000-byte records take 1040 bytes, 3 fit in 4 KiB */
	CU_ASSERT_FATAL(tring_make(&t, 4096, 1000, 1000, 0) == 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT(mp_ring_push(&t.r, &m, buf, 1000, 0) == i);
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 1000, 0) == -ETIMEDOUT);
	/* ... but a small one still fits in the 976 bytes left */
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 900, 0) == 3);
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 1, 0) == -ETIMEDOUT);
	CU_ASSERT(mp_ring_count(&t.r) == 4);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 1000);
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 1000, 0) == 3);
	CU_ASSERT(mp_ring_count(&t.r) == 4);
	tring_free(&t);
}

/* A push's count (mp_ring.h): at least the exact count, below the limit.
 * For tests whose subject is something else. */
static int count_ok(int rc, int exact, uint32_t max_records)
{
	return rc >= exact && rc < (int)max_records;
}

/*
 * What a producer handle knows of the consumer (mp_ring.h): the tail and
 * tail seq it read last.  push_expect() applies the documented rule to a
 * push of len bytes into r, with the ring's head and head seq and the
 * consumer's real tail and tail seq given by the caller (a single-thread
 * test knows them): the count from the old reading while that shows room,
 * else a new reading and the exact count, or -ETIMEDOUT when full.
 */
struct pview {
	uint64_t tail, seq;
};

static int push_expect(struct pview *v, const mp_ring_t *r, uint64_t head,
		       uint64_t hs, uint64_t tail, uint64_t ts, uint32_t len)
{
	uint64_t need = (40u + len + 7u) & ~7u;

	if (head - v->tail + need <= r->data_bytes &&
	    hs - v->seq < r->max_records)
		return (int)(hs - v->seq);
	v->tail = tail;
	v->seq = ts;
	if (head - tail + need <= r->data_bytes && hs - ts < r->max_records)
		return (int)(hs - ts);
	return -ETIMEDOUT;
}

static void test_push_returns_queued_before(void)
{
	struct tring t;
	struct mp_ring_rec m = {.type = 1};
	uint8_t buf[8] = {0};
	mp_ring_t p;
	int rc;

	CU_ASSERT_FATAL(tring_make(&t, 8192, 64, 100, 0) == 0);
	/* nothing consumed yet: exact */
	for (int i = 0; i < 10; i++) {
		CU_ASSERT(mp_ring_push(&t.r, &m, buf, 8, 0) == i);
		CU_ASSERT(m.seq == (uint64_t)i && m.len == 8);
		CU_ASSERT(mp_ring_count(&t.r) == i + 1);
	}
	for (int i = 0; i < 4; i++)
		CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 8);
	/* the handle has not looked at the consumer since: an upper bound,
	 * seq 10 minus the seq it read (0), where 6 were queued */
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 8, 0) == 10);
	CU_ASSERT(m.seq == 10);
	CU_ASSERT(mp_ring_count(&t.r) == 7);
	/* a handle attached now reads the consumer's position: exact */
	CU_ASSERT_FATAL(mp_ring_attach(&p, t.mem, t.size) == 0);
	CU_ASSERT(mp_ring_push(&p, &m, buf, 8, 0) == 7);
	CU_ASSERT(m.seq == 11);
	while (mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) >= 0)
		;
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	/* empty now: p counts from its attach (seq 4), the first handle
	 * from seq 0, both over */
	CU_ASSERT(mp_ring_push(&p, &m, buf, 8, 0) == 12 - 4);
	CU_ASSERT(m.seq == 12);
	/* the first handle over-states until its reading shows the ring
	 * full (seq 64 - 0 = the limit): then it reads the consumer's
	 * position (seq 12) and is exact from there while nothing is
	 * taken */
	for (uint64_t s = 13; s < 64; s++) {
		rc = mp_ring_push(&t.r, &m, buf, 8, 0);
		CU_ASSERT(rc == (int)s && m.seq == s);
	}
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 8, 0) == 64 - 12);
	CU_ASSERT(mp_ring_count(&t.r) == 64 - 12 + 1);
	CU_ASSERT(mp_ring_push(&t.r, &m, buf, 8, 0) == 64 - 12 + 1);
	/* and a push into an empty ring by a handle that knows it: 0 */
	while (mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) >= 0)
		;
	CU_ASSERT_FATAL(mp_ring_attach(&p, t.mem, t.size) == 0);
	CU_ASSERT(mp_ring_push(&p, &m, buf, 8, 0) == 0);
	CU_ASSERT(m.seq == 66);
	CU_ASSERT(mp_ring_count(&t.r) == 1);
	tring_free(&t);
}

/* A producer that sends now and then to a consumer asleep on the empty
 * ring: the push after one that woke the consumer reads its position
 * again, so every such push counts exactly 0 (the handle's reading is
 * otherwise from its attach and would only grow). */
static void test_trickle_to_sleeping_consumer_is_exact(void)
{
	enum { BURST = 20, TRICKLE = 6 };
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[64];
	int fds[2];
	pid_t pid;
	mp_ring_t p;
	char c;

	CU_ASSERT_FATAL(tring_make(&t, 8192, 64, 64, 1) == 0);
	CU_ASSERT_FATAL(pipe(fds) == 0);
	CU_ASSERT_FATAL(mp_ring_attach(&p, t.mem, t.size) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		t.r.spin = 0; /* sleeps as soon as the ring is empty */
		for (int i = 0; i < BURST + TRICKLE; i++) {
			if (mp_ring_pop(&t.r, &m, buf, sizeof(buf),
					in_ms(20000)) != 8 ||
			    write(fds[1], "x", 1) != 1)
				_exit(3);
		}
		_exit(0);
	}
	for (int i = 0; i < BURST; i++)
		CU_ASSERT(push_rec(&p, 0, i, 8, in_ms(5000), buf) >= 0);
	for (int i = 0; i < BURST; i++)
		CU_ASSERT_FATAL(read(fds[0], &c, 1) == 1);
	for (int k = 0; k < TRICKLE; k++) {
		int64_t until = in_ms(10000);
		int rc;

		/* the consumer took everything and is asleep on the futex */
		while (mp_proc_state(pid) != 'S' && mp_time_now_ns() < until)
			usleep(1000);
		CU_ASSERT_FATAL(mp_proc_state(pid) == 'S');
		rc = push_rec(&p, 0, BURST + k, 8, in_ms(5000), buf);
		if (k > 0)
			CU_ASSERT(rc == 0);
		CU_ASSERT_FATAL(read(fds[0], &c, 1) == 1);
	}
	CU_ASSERT(mp_test_wait(pid, 5000) == 0);
	close(fds[0]);
	close(fds[1]);
	tring_free(&t);
}

/* ---- data integrity ------------------------------------------------- */

static void test_wraparound_varied_sizes(void)
{
	enum { MAXP = 1000, ROUNDS = 20000 };
	struct tring t;
	struct mp_ring_rec m;
	uint8_t in[MAXP], out[MAXP];
	uint64_t pushed = 0, popped = 0;
	struct pview v = {0, 0};
	int bad = 0, stale = 0;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 64, MAXP, 0) == 0);
	for (int round = 0; round < ROUNDS && !bad; round++) {
		int n = (int)(mp_test_rand() % 5);

		/* push a few, of random sizes, some gathered from 3 pieces */
		for (int i = 0; i < n; i++) {
			uint32_t len = mp_test_rand() % (MAXP + 1);
			struct iovec iov[3];
			uint32_t a = len ? mp_test_rand() % len : 0;
			uint32_t b = len - a ? mp_test_rand() % (len - a) : 0;
			int rc, want;

			want = push_expect(&v, &t.r, mp_ring_head(&t.r), pushed,
					   mp_ring_tail(&t.r), popped, len);
			m.type = (int32_t)pushed;
			m.sender = 3;
			snprintf(m.id, sizeof(m.id), "p3");
			fill(in, len, 3, pushed);
			iov[0] = (struct iovec){in, a};
			iov[1] = (struct iovec){in + a, b};
			iov[2] = (struct iovec){in + a + b, len - a - b};
			rc = (pushed & 1) ? mp_ring_pushv(&t.r, &m, iov, 3, 0)
					  : mp_ring_push(&t.r, &m, in, len, 0);
			/* the count as the rule says: an upper bound */
			if (rc != want ||
			    (rc >= 0 && (rc < (int)(pushed - popped) ||
					 m.seq != pushed))) {
				bad = 1;
				break;
			}
			if (rc == -ETIMEDOUT)
				break;
			stale += rc != (int)(pushed - popped);
			pushed++;
		}
		/* pop a few: by pop, or by peeking a batch and releasing it */
		n = (int)(mp_test_rand() % 6);
		if (round & 1) {
			for (int i = 0; i < n && popped < pushed; i++) {
				int rc = mp_ring_pop(&t.r, &m, out, MAXP, 0);

				if (!rec_ok(&m, out, rc,
					    rc >= 0 ? (uint32_t)rc : 0) ||
				    m.seq != popped ||
				    m.type != (int32_t)popped) {
					bad = 2;
					break;
				}
				popped++;
			}
		} else {
			uint64_t cur = mp_ring_tail(&t.r);
			int k = 0;

			for (; k < n && popped + k < pushed; k++) {
				int rc = mp_ring_peek(&t.r, &cur, &m, out, MAXP,
						      0);

				if (!rec_ok(&m, out, rc,
					    rc >= 0 ? (uint32_t)rc : 0) ||
				    m.seq != popped + k) {
					bad = 3;
					break;
				}
			}
			if (mp_ring_release(&t.r, cur) != 0)
				bad = 4;
			popped += k;
		}
		if (!bad && mp_ring_count(&t.r) != (int)(pushed - popped))
			bad = 5;
	}
	CU_ASSERT(bad == 0);
	if (bad)
		fprintf(stderr, "wrap-around failed (%d) after %llu records\n",
			bad, (unsigned long long)popped);
	/* the positions went round the 4 KiB area many times */
	CU_ASSERT(mp_ring_tail(&t.r) > 100 * 4096ull);
	/* both kinds of count were seen: over-stated and exact */
	CU_ASSERT(stale > 0 && (uint64_t)stale < pushed);
	tring_free(&t);
}

static void test_empty_and_64k_records(void)
{
	struct tring t;
	struct mp_ring_rec m = {.type = 9, .sender = 1};
	uint8_t *in = malloc(65537), *out = malloc(65536);
	struct iovec iov[2];

	CU_ASSERT_FATAL(in && out);
	CU_ASSERT_FATAL(tring_make(&t, mp_ring_min_data_bytes(65536), 16, 65536,
				   0) == 0);
	snprintf(m.id, sizeof(m.id), "p1");
	for (int lap = 0; lap < 6; lap++) {
		fill(in, 65536, 1, lap);
		m.type = lap;
		/* after lap 0 the handle's reading is from the failed push
		 * below, before the two pops: 2 queued by it (exact: 0);
		 * the 64 KiB record does not fit by that reading, so its
		 * push reads the consumer's position again: exact */
		CU_ASSERT(mp_ring_push(&t.r, &m, NULL, 0, 0) == (lap ? 2 : 0));
		CU_ASSERT(mp_ring_push(&t.r, &m, in, 65536, 0) == 1);
		/* no room left for another 64 KiB record beside it */
		CU_ASSERT(mp_ring_push(&t.r, &m, in, 65536, 0) == -ETIMEDOUT);
		memset(out, 0, 65536);
		CU_ASSERT(mp_ring_pop(&t.r, &m, out, 65536, 0) == 0);
		CU_ASSERT(m.len == 0 && m.type == lap);
		CU_ASSERT(mp_ring_pop(&t.r, &m, out, 65536, 0) == 65536);
		CU_ASSERT(m.len == 65536 && pat_ok(out, 65536, 1, lap));
	}
	/* over the limit: refused before anything is queued */
	CU_ASSERT(mp_ring_push(&t.r, &m, in, 65537, 0) == -EMSGSIZE);
	iov[0] = (struct iovec){in, 40000};
	iov[1] = (struct iovec){in, 30000};
	CU_ASSERT(mp_ring_pushv(&t.r, &m, iov, 2, 0) == -EMSGSIZE);
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	/* a record longer than the buffer is still removed, copy truncated */
	fill(in, 65536, 1, 77);
	m.type = 77;
	CU_ASSERT(mp_ring_push(&t.r, &m, in, 65536, 0) == 0);
	memset(out, 0, 65536);
	CU_ASSERT(mp_ring_pop(&t.r, &m, out, 100, 0) == 65536);
	CU_ASSERT(m.len == 65536 && pat_ok(out, 100, 1, 77) && out[100] == 0);
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	tring_free(&t);
	free(in);
	free(out);
}

static void test_peek_release_cursor(void)
{
	struct tring t;
	struct mp_ring_rec m = {0};
	uint8_t buf[64];
	uint64_t cur, c1, c2, c5;
	int64_t t0;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 16, 64, 0) == 0);
	for (int i = 0; i < 5; i++) {
		m.type = i;
		CU_ASSERT(push_rec(&t.r, 2, i, 20 + i, 0, buf) == i);
	}
	cur = mp_ring_tail(&t.r);
	CU_ASSERT(cur == 0);
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) == 20);
	c1 = cur;
	CU_ASSERT(rec_ok(&m, buf, 20, 20) && m.seq == 0);
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) == 21);
	c2 = cur;
	CU_ASSERT(c1 > 0 && c2 > c1);
	/* peeking removes nothing */
	CU_ASSERT(mp_ring_count(&t.r) == 5);
	CU_ASSERT(mp_ring_tail(&t.r) == 0);
	/* a cursor not on a record boundary, or past head, is refused */
	CU_ASSERT(mp_ring_release(&t.r, c1 + 8) == -EINVAL);
	CU_ASSERT(mp_ring_release(&t.r, c2 + 4) == -EINVAL);
	CU_ASSERT(mp_ring_release(&t.r, 4096 * 2) == -EINVAL);
	cur = c1 + 8;
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) ==
		  -EBADMSG);
	CU_ASSERT(cur == c1 + 8);
	/* release two: three left, the next pop is seq 2 */
	CU_ASSERT(mp_ring_release(&t.r, c2) == 0);
	CU_ASSERT(mp_ring_tail(&t.r) == c2);
	CU_ASSERT(mp_ring_count(&t.r) == 3);
	/* a cursor before the tail is now outside the queued records */
	cur = c1;
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) == -EINVAL);
	CU_ASSERT(mp_ring_release(&t.r, c1) == -EINVAL);
	/* stream the rest without releasing: at head, peek waits */
	cur = c2;
	for (int i = 2; i < 5; i++) {
		CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) ==
			  20 + i);
		CU_ASSERT(m.seq == (uint64_t)i &&
			  rec_ok(&m, buf, 20 + i, 20 + i));
	}
	c5 = cur;
	t0 = mp_time_now_ns();
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf),
			       t0 + 30 * MS) == -ETIMEDOUT);
	CU_ASSERT(mp_time_now_ns() - t0 >= 30 * MS);
	CU_ASSERT(cur == c5);
	/* re-reading from the tail gives the same records (a consumer
	 * resending what was not acknowledged) */
	cur = mp_ring_tail(&t.r);
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) == 22);
	CU_ASSERT(m.seq == 2);
	/* a record pushed now is seen by the waiting cursor */
	CU_ASSERT(count_ok(push_rec(&t.r, 2, 5, 25, 0, buf), 3, 64));
	cur = c5;
	CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) == 25);
	CU_ASSERT(m.seq == 5);
	CU_ASSERT(mp_ring_release(&t.r, cur) == 0);
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	CU_ASSERT(mp_ring_release(&t.r, cur) == 0); /* nothing to free */
	tring_free(&t);
}

/* ---- multi-process stress ------------------------------------------- */

struct stress_result {
	uint64_t sum[8]; /* per producer: sum of the payload bytes pushed */
	int err[8];
};

static uint64_t bytesum(const uint8_t *p, uint32_t n)
{
	uint64_t s = 0;

	for (uint32_t i = 0; i < n; i++)
		s += p[i];
	return s;
}

static void stress_producer(void *mem, size_t size, uint32_t id, uint64_t n,
			    struct stress_result *res)
{
	uint8_t buf[2048];
	uint64_t sum = 0;
	mp_ring_t r;

	if (mp_ring_attach(&r, mem, size) != 0)
		_exit(2);
	for (uint64_t i = 0; i < n; i++) {
		uint32_t len = stress_len(id, i);
		int rc = push_rec(&r, id, i, len, in_ms(5000), buf);

		if (rc < 0) {
			res->err[id] = rc;
			_exit(3);
		}
		sum += bytesum(buf, len);
	}
	res->sum[id] = sum;
	_exit(0);
}

static void test_four_producers_one_consumer(void)
{
	enum { NPROD = 4 };
	uint64_t per = slow_env ? 20000 : 250000;
	struct stress_result *res = shared_map(sizeof(*res));
	struct tring t;
	struct mp_ring_rec m;
	uint64_t next[NPROD] = {0}, total = 0, sum = 0, want_sum = 0;
	uint8_t buf[2048];
	pid_t pid[NPROD];
	int bad = 0, rc;
	int64_t t0 = mp_time_now_ns();

	CU_ASSERT_FATAL(res != NULL);
	CU_ASSERT_FATAL(tring_make(&t, 65536, 1024, 2048, 1) == 0);
	for (uint32_t i = 0; i < NPROD; i++) {
		pid[i] = mp_test_fork();
		if (pid[i] == 0)
			stress_producer(t.mem, t.size, i, per, res);
		CU_ASSERT_FATAL(pid[i] > 0);
	}
	while (total < NPROD * per && !bad) {
		rc = mp_ring_pop(&t.r, &m, buf, sizeof(buf), in_ms(5000));
		if (rc < 0) {
			fprintf(stderr, "stress: pop %d after %llu\n", rc,
				(unsigned long long)total);
			bad = 1;
			break;
		}
		if (m.sender >= NPROD || (uint64_t)m.type != next[m.sender] ||
		    m.seq != total ||
		    !rec_ok(&m, buf, rc, stress_len(m.sender, m.type))) {
			fprintf(stderr,
				"stress: bad record sender %u type %d "
				"seq %llu after %llu\n",
				m.sender, m.type, (unsigned long long)m.seq,
				(unsigned long long)total);
			bad = 2;
			break;
		}
		next[m.sender]++;
		sum += bytesum(buf, m.len);
		total++;
	}
	for (int i = 0; i < NPROD; i++) {
		int st = mp_test_wait(pid[i], 6000);

		CU_ASSERT(st == 0);
		want_sum += res->sum[i];
	}
	CU_ASSERT(bad == 0);
	CU_ASSERT(total == NPROD * per);
	for (int i = 0; i < NPROD; i++)
		CU_ASSERT(next[i] == per);
	CU_ASSERT(sum == want_sum);
	/* nothing duplicated: the ring is empty now */
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == -ETIMEDOUT);
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	fprintf(stderr, "  %llu records in %.2f s ", (unsigned long long)total,
		(mp_time_now_ns() - t0) / 1e9);
	tring_free(&t);
	munmap(res, sizeof(*res));
}

/* ---- death ---------------------------------------------------------- */

/* Producer that pushes until killed; sender ids are unique per child. */
static void endless_producer(void *mem, size_t size, uint32_t id)
{
	uint8_t buf[2048];
	mp_ring_t r;

	if (mp_ring_attach(&r, mem, size) != 0)
		_exit(2);
	for (uint64_t i = 0;; i++)
		if (push_rec(&r, id, i, stress_len(id, i), in_ms(10000), buf) <
		    0)
			_exit(3);
}

static void test_producers_killed_mid_push(void)
{
	enum { LIVE = 3, MAXID = 1024 };
	int rounds = slow_env ? 30 : 300;
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[2048];
	uint64_t *next = calloc(MAXID, sizeof(*next)), total = 0;
	pid_t pid[LIVE];
	uint32_t ids = 0;
	int bad = 0, rc, kills = 0;

	CU_ASSERT_FATAL(next != NULL);
	/* a small ring, so that producers also die while waiting */
	CU_ASSERT_FATAL(tring_make(&t, 8192, 64, 2048, 1) == 0);
	for (int i = 0; i < LIVE; i++) {
		pid[i] = mp_test_fork();
		if (pid[i] == 0)
			endless_producer(t.mem, t.size, ids);
		ids++;
	}
	for (int round = 0; round < rounds && !bad; round++) {
		int64_t until =
			mp_time_now_ns() + (mp_test_rand() % 3000) * 1000;
		int victim = (int)(mp_test_rand() % LIVE);

		/* consume for 0-3 ms, then kill one producer wherever it is
		 * and start another */
		do {
			rc = mp_ring_pop(&t.r, &m, buf, sizeof(buf),
					 in_ms(2000));
			if (rc < 0 || m.sender >= ids ||
			    (uint64_t)m.type != next[m.sender] ||
			    !rec_ok(&m, buf, rc,
				    stress_len(m.sender, m.type))) {
				fprintf(stderr,
					"kill: pop %d sender %u type %d "
					"round %d\n",
					rc, m.sender, m.type, round);
				bad = 1;
				break;
			}
			next[m.sender]++;
			total++;
		} while (mp_time_now_ns() < until);
		if (bad || ids >= MAXID)
			break;
		mp_test_kill(pid[victim]);
		kills++;
		pid[victim] = mp_test_fork();
		if (pid[victim] == 0)
			endless_producer(t.mem, t.size, ids);
		ids++;
	}
	for (int i = 0; i < LIVE; i++)
		mp_test_kill(pid[i]);
	/* drain what the dead left: every record intact and in order */
	while (!bad && (rc = mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0)) >= 0) {
		if (m.sender >= ids || (uint64_t)m.type != next[m.sender] ||
		    !rec_ok(&m, buf, rc, stress_len(m.sender, m.type)))
			bad = 2;
		next[m.sender]++;
		total++;
	}
	CU_ASSERT(bad == 0);
	CU_ASSERT(kills == rounds);
	CU_ASSERT(total > (uint64_t)rounds);
	/* the lock is usable and the ring consistent afterwards */
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	CU_ASSERT(push_rec(&t.r, 0, next[0], 5, in_ms(2000), buf) == 0);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 5);
	CU_ASSERT(rec_ok(&m, buf, 5, 5) && (uint64_t)m.type == next[0]);
	fprintf(stderr, "  %d kills, %llu records ", kills,
		(unsigned long long)total);
	tring_free(&t);
	free(next);
}

static void test_producer_dies_holding_lock(void)
{
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[64];
	long lock_off;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 16, 64, 1) == 0);
	lock_off = find_lock(&t);
	CU_ASSERT_FATAL(lock_off >= 0);
	CU_ASSERT(push_rec(&t.r, 1, 0, 10, 0, buf) == 0);
	die_holding_lock(&t, lock_off);
	/* the next push gets MP_LOCK_REPAIR, repairs, and goes on */
	CU_ASSERT(push_rec(&t.r, 1, 1, 11, in_ms(2000), buf) == 1);
	CU_ASSERT(last_seq == 1);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 10);
	CU_ASSERT(m.seq == 0 && rec_ok(&m, buf, 10, 10));
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 11);
	CU_ASSERT(m.seq == 1 && rec_ok(&m, buf, 11, 11));
	/* dying twice in a row is no different */
	die_holding_lock(&t, lock_off);
	die_holding_lock(&t, lock_off);
	CU_ASSERT(count_ok(push_rec(&t.r, 1, 2, 12, in_ms(2000), buf), 0, 16));
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 12);
	CU_ASSERT(m.seq == 2);
	tring_free(&t);
}

/* A producer that died after counting its record (head_seq) but before
 * publishing it (head): the record must stay unseen and its seq reused. */
static void test_producer_dies_between_commit_stores(void)
{
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[64];
	size_t words;
	uint64_t *a, *b;
	long lock_off, w_head, w_seq;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 16, 64, 1) == 0);
	lock_off = find_lock(&t);
	CU_ASSERT_FATAL(lock_off >= 0);
	words = hdr_bytes(&t) / 8;
	a = malloc(words * 8);
	b = malloc(words * 8);
	CU_ASSERT_FATAL(a && b);
	/* find head and head_seq: a push of 16 bytes (a 56-byte record)
	 * moves them by 56 and by 1 */
	CU_ASSERT(push_rec(&t.r, 1, 0, 16, 0, buf) == 0);
	memcpy(a, t.mem, words * 8);
	CU_ASSERT(push_rec(&t.r, 1, 1, 16, 0, buf) == 1);
	memcpy(b, t.mem, words * 8);
	w_head = find_word(a, b, words, 56);
	w_seq = find_word(a, b, words, 1);
	CU_ASSERT_FATAL(w_head >= 0 && w_seq >= 0);

	/* record 2 written and counted, head put back: the dead state */
	CU_ASSERT(push_rec(&t.r, 1, 2, 16, 0, buf) == 2);
	((volatile uint64_t *)t.mem)[w_head] -= 56;
	die_holding_lock(&t, lock_off);
	/* the repairing push reuses seq 2 and the position */
	CU_ASSERT(push_rec(&t.r, 1, 3, 20, in_ms(2000), buf) == 2);
	CU_ASSERT(last_seq == 2);
	CU_ASSERT(((uint64_t *)t.mem)[w_seq] == 3);
	CU_ASSERT(mp_ring_count(&t.r) == 3);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
		CU_ASSERT(m.seq == (uint64_t)i && m.type == i);
	}
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 20);
	CU_ASSERT(m.seq == 2 && m.type == 3 && rec_ok(&m, buf, 20, 20));
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == -ETIMEDOUT);

	/* and the seqs go on from there */
	CU_ASSERT(count_ok(push_rec(&t.r, 1, 4, 16, 0, buf), 0, 16));
	CU_ASSERT(last_seq == 3);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
	CU_ASSERT(m.seq == 3 && m.type == 4);
	free(a);
	free(b);
	tring_free(&t);
}

/* A consumer that died after storing tail_seq but before tail: the record
 * at tail comes out again (with its own seq), nothing is lost. */
static void test_consumer_dies_between_commit_stores(void)
{
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[64];
	size_t words;
	uint64_t *a, *b;
	long w_tail, w_tseq;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 4, 64, 0) == 0);
	words = hdr_bytes(&t) / 8;
	a = malloc(words * 8);
	b = malloc(words * 8);
	CU_ASSERT_FATAL(a && b);
	for (int i = 0; i < 4; i++)
		CU_ASSERT(push_rec(&t.r, 1, i, 16, 0, buf) == i);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
	memcpy(a, t.mem, words * 8);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
	memcpy(b, t.mem, words * 8);
	w_tail = find_word(a, b, words, 56);
	w_tseq = find_word(a, b, words, 1);
	CU_ASSERT_FATAL(w_tail >= 0 && w_tseq >= 0);

	/* tail_seq one ahead: producers see room for one more record than
	 * the limit (never less: no deadlock) */
	((volatile uint64_t *)t.mem)[w_tseq] += 1;
	CU_ASSERT(push_rec(&t.r, 1, 4, 16, 0, buf) == 1);
	CU_ASSERT(push_rec(&t.r, 1, 5, 16, 0, buf) == 2);
	CU_ASSERT(push_rec(&t.r, 1, 6, 16, 0, buf) == 3);
	CU_ASSERT(push_rec(&t.r, 1, 7, 16, 0, buf) == -ETIMEDOUT);
	/* the consumer takes record 2 back and carries on in order; the
	 * ring holds max_records + 1 until it drains, which is full, not
	 * corrupt */
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
	CU_ASSERT(m.seq == 2 && m.type == 2);
	CU_ASSERT(mp_ring_count(&t.r) == 4);
	CU_ASSERT(push_rec(&t.r, 1, 7, 16, 0, buf) == -ETIMEDOUT);
	for (int i = 3; i < 7; i++) {
		CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
		CU_ASSERT(m.seq == (uint64_t)i && m.type == i &&
			  rec_ok(&m, buf, 16, 16));
	}
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == -ETIMEDOUT);
	/* the same through release() */
	for (int i = 7; i < 9; i++)
		CU_ASSERT(push_rec(&t.r, 1, i, 16, 0, buf) == i - 7);
	((volatile uint64_t *)t.mem)[w_tseq] += 1;
	{
		uint64_t cur = mp_ring_tail(&t.r);

		CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) ==
			  16);
		CU_ASSERT(m.seq == 7);
		CU_ASSERT(mp_ring_peek(&t.r, &cur, &m, buf, sizeof(buf), 0) ==
			  16);
		CU_ASSERT(m.seq == 8);
		CU_ASSERT(mp_ring_release(&t.r, cur) == 0);
	}
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	CU_ASSERT(count_ok(push_rec(&t.r, 1, 9, 16, 0, buf), 0, 4));
	CU_ASSERT(last_seq == 9);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), 0) == 16);
	CU_ASSERT(m.seq == 9);
	free(a);
	free(b);
	tring_free(&t);
}

/* ---- corruption ----------------------------------------------------- */

static int in_set(int rc, const int *ok, int n)
{
	for (int i = 0; i < n; i++)
		if (rc == ok[i])
			return 1;
	return 0;
}

static void test_corrupt_ring_never_crashes(void)
{
	enum { MAXP = 512 };
	static const int push_ok[] = {-ETIMEDOUT, -EBADMSG};
	static const int read_ok[] = {-ETIMEDOUT, -EBADMSG, -EINVAL};
	int rounds = slow_env ? 300 : 4000;
	struct tring t;
	struct mp_ring_rec m;
	uint8_t *buf = malloc(MAXP);
	long lock_off;
	int bad = 0, errors = 0, valid = 0;

	CU_ASSERT_FATAL(buf != NULL);
	CU_ASSERT_FATAL(tring_make(&t, 2048, 16, MAXP, 0) == 0);
	lock_off = find_lock(&t);
	CU_ASSERT_FATAL(lock_off >= 0);
	for (int round = 0; round < rounds && !bad; round++) {
		int n = (int)(mp_test_rand() % 10), rc;
		uint64_t cur;

		/* a live ring: some records in, some out, positions on */
		CU_ASSERT_FATAL(
			mp_ring_init(&t.r, t.mem, t.size, 2048, 16, MAXP) == 0);
		for (int i = 0; i < n; i++)
			push_rec(&t.r, 1, i, mp_test_rand() % 300, 0, buf);
		for (int i = (int)(mp_test_rand() % 4); i > 0; i--)
			mp_ring_pop(&t.r, &m, buf, MAXP, 0);
		for (int i = (int)(mp_test_rand() % 8); i > 0; i--)
			push_rec(&t.r, 2, i, mp_test_rand() % 300, 0, buf);
		/* scribble: header (not the mutex) and records */
		for (int i = 1 + (int)(mp_test_rand() % 8); i > 0; i--) {
			size_t off;

			if (mp_test_rand() & 1)
				off = mp_test_rand() % hdr_bytes(&t);
			else
				off = hdr_bytes(&t) + mp_test_rand() % 2048;
			if (off >= (size_t)lock_off &&
			    off < lock_off + sizeof(mp_lock_sh_t))
				continue;
			((uint8_t *)t.mem)[off] = (uint8_t)mp_test_rand();
		}
		/* every call: an error from the list, or well-formed data */
		rc = mp_ring_count(&t.r);
		if (!(rc == -EBADMSG || (rc >= 0 && rc <= 17)))
			bad = 1;
		cur = mp_ring_tail(&t.r);
		for (int i = 0; i < 20 && !bad; i++) {
			rc = mp_ring_peek(&t.r, &cur, &m, buf,
					  mp_test_rand() % (MAXP + 1), 0);
			if (rc < 0) {
				if (!in_set(rc, read_ok, 3))
					bad = 2;
				break;
			}
			if ((uint32_t)rc != m.len || m.len > MAXP ||
			    memchr(m.id, 0, sizeof(m.id)) == NULL)
				bad = 3;
		}
		rc = (mp_test_rand() & 1) ? mp_ring_release(&t.r, cur) : 0;
		if (!(rc == 0 || in_set(rc, read_ok, 3)))
			bad = 4;
		for (int i = 0; i < 20 && !bad; i++) {
			rc = mp_ring_pop(&t.r, &m, buf, MAXP, 0);
			if (rc < 0) {
				if (!in_set(rc, read_ok, 3))
					bad = 5;
				if (rc == -EBADMSG)
					errors++;
				break;
			}
			valid++;
			if ((uint32_t)rc != m.len || m.len > MAXP ||
			    memchr(m.id, 0, sizeof(m.id)) == NULL)
				bad = 6;
		}
		rc = push_rec(&t.r, 3, 0, mp_test_rand() % (MAXP + 1), 0, buf);
		if (!(rc >= 0 || in_set(rc, push_ok, 2)))
			bad = 7;
		rc = mp_ring_release(&t.r, mp_test_rand() & ~7u);
		if (!(rc == 0 || in_set(rc, read_ok, 3)))
			bad = 8;
		/* reset makes it serve again, exactly */
		/* up to max_records + 1 (a consumer's death, see mp_ring.c) */
		rc = mp_ring_reset(&t.r);
		if (rc < 0 || rc > 17)
			bad = 9;
		if (mp_ring_count(&t.r) != 0 ||
		    push_rec(&t.r, 4, round, 33, 0, buf) != 0 ||
		    mp_ring_pop(&t.r, &m, buf, MAXP, 0) != 33 ||
		    !rec_ok(&m, buf, 33, 33) || m.type != round ||
		    mp_ring_pop(&t.r, &m, buf, MAXP, 0) != -ETIMEDOUT)
			bad = 10;
		if (bad)
			fprintf(stderr,
				"corrupt: round %d failed at %d (rc %d)\n",
				round, bad, rc);
	}
	CU_ASSERT(bad == 0);
	CU_ASSERT(errors > 0); /* the scribbles were noticed */
	CU_ASSERT(valid > 0);
	tring_free(&t);
	free(buf);
}

/* ---- blocking ------------------------------------------------------- */

/* Drained by a consumer whose commit is a plain store (plain_commit 1:
 * producers fence it from afar before they sleep) or a seq_cst one (0). */
static void blocked_producers_released(int plain_commit)
{
	enum { NPROD = 6, EACH = 1 };
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[64];
	uint64_t next[NPROD + 1] = {0};
	pid_t pid[NPROD];
	int got = 0;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 2, 64, 1) == 0);
	if (plain_commit && !t.r.plain_commit) {
		fprintf(stderr, "  (no membarrier: plain commits not used)\n");
		plain_commit = 0;
	}
	t.r.plain_commit = plain_commit;
	CU_ASSERT(push_rec(&t.r, NPROD, 0, 8, 0, buf) == 0);
	CU_ASSERT(push_rec(&t.r, NPROD, 1, 8, 0, buf) == 1);
	for (uint32_t i = 0; i < NPROD; i++) {
		pid[i] = mp_test_fork();
		if (pid[i] == 0) {
			mp_ring_t r;

			if (mp_ring_attach(&r, t.mem, t.size) != 0)
				_exit(2);
			for (int k = 0; k < EACH; k++)
				if (push_rec(&r, i, k, 8, in_ms(10000), buf) <
				    0)
					_exit(3);
			_exit(0);
		}
	}
	/* they all wait: nothing gets in while the ring is full */
	usleep(200 * 1000);
	CU_ASSERT(mp_ring_count(&t.r) == 2);
	/* drain slowly: each pop lets some producer in, and none is
	 * forgotten */
	while (got < 2 + NPROD * EACH) {
		int rc = mp_ring_pop(&t.r, &m, buf, sizeof(buf), in_ms(5000));

		if (rc < 0)
			break;
		CU_ASSERT(m.sender <= NPROD &&
			  (uint64_t)m.type == next[m.sender]);
		CU_ASSERT(rec_ok(&m, buf, rc, 8));
		if (m.sender <= NPROD)
			next[m.sender]++;
		got++;
		usleep(2000);
	}
	CU_ASSERT(got == 2 + NPROD * EACH);
	for (int i = 0; i < NPROD; i++) {
		CU_ASSERT(mp_test_wait(pid[i], 5000) == 0);
		CU_ASSERT(next[i] == EACH);
	}
	tring_free(&t);
}

static void test_blocked_producers_all_released(void)
{
	blocked_producers_released(1);
}

static void test_blocked_producers_released_seq_cst(void)
{
	blocked_producers_released(0);
}

/*
 * No wake-up lost: producers push a trickle with pauses long enough for
 * the consumer's spin to end, so it sleeps between records and many
 * records land while it sleeps or is about to.  Every record must come,
 * each producer's in order, with every pop bounded (3 s: a lost wake-up
 * leaves a record unseen until the next push, or for good after the
 * last one; the check is on delivery, not speed).  Roles run in children
 * so that the knob (MESSIP_NO_MEMBARRIER) applies to one side:
 * nofence 1, the producers (they publish with locked stores); 2, the
 * consumer (its fence fails: it sleeps in slices while the producers
 * still publish with plain stores).
 */
static void trickle_to_sleeper(int nofence)
{
	enum { NPROD = 2, EACH = 2000 };
	struct tring t;
	pid_t cons, prod[NPROD];

	CU_ASSERT_FATAL(tring_make(&t, 4096, 16, 64, 1) == 0);
	cons = mp_test_fork();
	if (cons == 0) {
		uint64_t next[NPROD] = {0};
		struct mp_ring_rec m;
		uint8_t buf[64];
		mp_ring_t r;
		int rc;

		if (nofence == 2)
			setenv("MESSIP_NO_MEMBARRIER", "1", 1);
		if (mp_ring_attach(&r, t.mem, t.size) != 0)
			_exit(10);
		if (nofence == 2 && mp_fence_remote() != -ENOSYS)
			_exit(11);
		r.spin = 0; /* sleep at once: more races with a push */
		for (int n = 0; n < NPROD * EACH; n++) {
			rc = mp_ring_pop(&r, &m, buf, sizeof(buf), in_ms(3000));
			if (rc < 0)
				_exit(12);
			if (m.sender >= NPROD || (uint64_t)m.type != next[m.sender] ||
			    !rec_ok(&m, buf, rc, 8))
				_exit(13);
			next[m.sender]++;
		}
		_exit(0);
	}
	for (uint32_t i = 0; i < NPROD; i++) {
		prod[i] = mp_test_fork();
		if (prod[i] == 0) {
			uint8_t buf[64];
			mp_ring_t r;

			if (nofence == 1)
				setenv("MESSIP_NO_MEMBARRIER", "1", 1);
			if (mp_ring_attach(&r, t.mem, t.size) != 0)
				_exit(20);
			/* Plain publications exactly where the kernel
			 * offers membarrier and the knob does not forbid. */
			if (r.plain_publish != (nofence == 1 ? 0
							     : mp_fence_register()))
				_exit(21);
			srandom(getpid());
			for (int k = 0; k < EACH; k++) {
				if (push_rec(&r, i, k, 8, in_ms(10000), buf) < 0)
					_exit(22);
				/* the consumer does not spin: it goes to
				 * sleep as we push, again and again */
				if (random() % 4 == 0)
					usleep((useconds_t)(random() % 50));
			}
			_exit(0);
		}
	}
	for (int i = 0; i < NPROD; i++)
		CU_ASSERT(mp_test_wait(prod[i], 30000) == 0);
	CU_ASSERT(mp_test_wait(cons, 30000) == 0);
	tring_free(&t);
}

static void test_trickle_to_sleeper_fenced(void)
{
	trickle_to_sleeper(0);
}

static void test_trickle_to_sleeper_producers_unfenced(void)
{
	trickle_to_sleeper(1);
}

static void test_trickle_to_sleeper_consumer_unfenced(void)
{
	trickle_to_sleeper(2);
}

static void test_reset_discards_and_wakes(void)
{
	struct tring t;
	struct mp_ring_rec m;
	uint8_t buf[64];
	pid_t pid;

	CU_ASSERT_FATAL(tring_make(&t, 4096, 3, 64, 1) == 0);
	for (int i = 0; i < 3; i++)
		CU_ASSERT(push_rec(&t.r, 0, i, 8, 0, buf) == i);
	pid = mp_test_fork();
	if (pid == 0) {
		/* blocked until the reset makes room */
		_exit(push_rec(&t.r, 1, 0, 9, in_ms(10000), buf) == 0 ? 0 : 3);
	}
	usleep(100 * 1000);
	CU_ASSERT(mp_ring_reset(&t.r) == 3);
	CU_ASSERT(mp_test_wait(pid, 5000) == 0);
	CU_ASSERT(mp_ring_pop(&t.r, &m, buf, sizeof(buf), in_ms(1000)) == 9);
	CU_ASSERT(m.sender == 1 && m.seq == 3 && rec_ok(&m, buf, 9, 9));
	CU_ASSERT(mp_ring_count(&t.r) == 0);
	CU_ASSERT(mp_ring_reset(&t.r) == 0);
	tring_free(&t);
}

static const struct mp_test_case tests[] = {
	{"sizes, init and attach are checked", test_sizes_and_attach},
	{"empty ring: pop times out at its deadline", test_empty_pop_times_out},
	{"full ring: push times out and queues nothing",
	 test_full_push_times_out},
	{"capacity counted in records and in bytes",
	 test_capacity_records_and_bytes},
	{"push returns the records queued before",
	 test_push_returns_queued_before},
	{"a trickle to a sleeping consumer counts exactly",
	 test_trickle_to_sleeping_consumer_is_exact},
	{"wrap-around with varied sizes, every byte checked",
	 test_wraparound_varied_sizes},
	{"0-byte and 64 KiB records", test_empty_and_64k_records},
	{"peek and release with a cursor", test_peek_release_cursor},
	{"4 producers, 1 consumer, 1,000,000 records",
	 test_four_producers_one_consumer},
	{"producers killed mid-push", test_producers_killed_mid_push},
	{"producer dies holding the lock", test_producer_dies_holding_lock},
	{"producer dies between counting and publishing",
	 test_producer_dies_between_commit_stores},
	{"consumer dies between its two commit stores",
	 test_consumer_dies_between_commit_stores},
	{"corrupt header and records: errors, never a crash",
	 test_corrupt_ring_never_crashes},
	{"blocked producers all released as the consumer drains",
	 test_blocked_producers_all_released},
	{"blocked producers all released by a consumer committing with "
	 "seq_cst stores (no asymmetric fence)",
	 test_blocked_producers_released_seq_cst},
	{"reset discards and wakes blocked producers",
	 test_reset_discards_and_wakes},
	{"no wake-up lost: a sleeping consumer gets every record (plain "
	 "publications, consumer fences)",
	 test_trickle_to_sleeper_fenced},
	{"no wake-up lost: producers without membarrier (locked "
	 "publications)",
	 test_trickle_to_sleeper_producers_unfenced},
	{"no wake-up lost: consumer without membarrier (plain publications, "
	 "sleep in slices)",
	 test_trickle_to_sleeper_consumer_unfenced},
	MP_TEST_END};

int main(void)
{
	slow_env = getenv("MP_VALGRIND") != NULL;
	mp_test_init("test_ring", slow_env ? 600 : 60);
	return mp_test_main("ring", tests);
}
