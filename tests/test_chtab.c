/*
 * test_chtab — the shared channel table (mp_chtab).
 *
 * Contract: exact capacity, duplicates, name length limits, lookup and
 * remove, slots that never move while other names come and go, per-slot
 * generations, reuse.  Against a reference model: 100k random operations.
 * Across processes: four processes churning disjoint and shared names,
 * a table attached through a named segment.  Faults: a process stopped and
 * then SIGKILLed while it holds the table lock (the next user repairs),
 * and random scribbles over the index, slots and counters (only errors or
 * valid answers; run it under ASan).
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_chtab.h"
#include "mp_lock.h"
#include "mp_shm.h"
#include "mp_test.h"
#include "mp_time.h"

#define NB (MP_CHTAB_NAME_MAX + 1)

/* A table in anonymous shared memory, inherited by forked children. */
static void *tab_new(mp_chtab_t *t, uint32_t cap, size_t *size)
{
	void *mem;

	*size = mp_chtab_size(cap);
	CU_ASSERT_FATAL(*size > 0);
	mem = mmap(NULL, *size, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(mem != MAP_FAILED);
	CU_ASSERT_EQUAL_FATAL(mp_chtab_init(t, mem, *size, cap), 0);
	return mem;
}

static void name_of(char *buf, const char *prefix, unsigned i)
{
	snprintf(buf, NB, "%s%u", prefix, i);
}

/*
 * Full consistency check through the API: every used slot's name looks up
 * to that very slot (so no name is in two slots), and count agrees.
 * Returns 0 or a code saying what failed; *used gets the number of names.
 */
static int check_consistent(mp_chtab_t *t, int *used)
{
	char out[NB];
	int n = 0, c;

	for (uint32_t s = 0; s < t->capacity; s++) {
		int64_t g = mp_chtab_slot_name(t, (int)s, out);

		if (g == -ENOENT)
			continue;
		if (g < 0)
			return 1;
		if (strlen(out) < 1 || strlen(out) > MP_CHTAB_NAME_MAX)
			return 2;
		if (mp_chtab_lookup(t, out) != (int)s)
			return 3;
		n++;
	}
	c = mp_chtab_count(t);
	if (c != n)
		return 4;
	if (used)
		*used = n;
	return 0;
}

/* Free list and index agree with count: exactly capacity - count more
 * names fit, each findable; then remove them again. */
static int check_fill(mp_chtab_t *t)
{
	int before = mp_chtab_count(t), added = 0, rc;
	char nm[NB];

	if (before < 0)
		return 10;
	for (unsigned i = 0;; i++) {
		name_of(nm, "fill-", i);
		rc = mp_chtab_insert(t, nm);
		if (rc == -ENOSPC)
			break;
		if (rc < 0 || mp_chtab_lookup(t, nm) != rc)
			return 11;
		added++;
	}
	if (added != (int)t->capacity - before)
		return 12;
	for (int i = 0; i < added; i++) {
		name_of(nm, "fill-", (unsigned)i);
		if (mp_chtab_remove(t, nm) < 0)
			return 13;
	}
	return mp_chtab_count(t) == before ? 0 : 14;
}

static void test_size_init_attach(void)
{
	mp_chtab_t t, u;
	size_t size;
	void *mem;

	CU_ASSERT_EQUAL(mp_chtab_size(0), 0);
	CU_ASSERT_EQUAL(mp_chtab_size((1u << 24) + 1), 0);
	CU_ASSERT(mp_chtab_size(1 << 24) > mp_chtab_size(100));
	CU_ASSERT(mp_chtab_size(100) > mp_chtab_size(99) ||
		  mp_chtab_size(100) == mp_chtab_size(99) + 64);

	mem = tab_new(&t, 100, &size);
	CU_ASSERT_EQUAL(t.capacity, 100);
	CU_ASSERT_EQUAL(t.nbuckets, 256);
	CU_ASSERT_EQUAL(mp_chtab_init(&u, mem, size - 1, 100), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_init(&u, mem, size, 0), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_init(&u, mem, size, (1u << 24) + 1), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_init(&u, (char *)mem + 1, size - 1, 1),
			-EINVAL);
	/* A failed init must not have touched the table. */
	CU_ASSERT_EQUAL(mp_chtab_insert(&t, "kept"), 0);
	CU_ASSERT_EQUAL(mp_chtab_attach(&u, mem, size), 0);
	CU_ASSERT_EQUAL(u.capacity, 100);
	CU_ASSERT_EQUAL(u.nbuckets, 256);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&u, "kept"), 0);
	CU_ASSERT_EQUAL(mp_chtab_attach(&u, mem, size - 1), -EBADMSG);
	CU_ASSERT_EQUAL(mp_chtab_attach(&u, mem, 16), -EBADMSG);
	((unsigned char *)mem)[0] ^= 1; /* the magic */
	CU_ASSERT_EQUAL(mp_chtab_attach(&u, mem, size), -EBADMSG);
	memset(mem, 0, size);
	CU_ASSERT_EQUAL(mp_chtab_attach(&u, mem, size), -EBADMSG);
	munmap(mem, size);

	/* nbuckets: the smallest power of two >= 2 * capacity. */
	for (uint32_t cap = 1; cap <= 70; cap++) {
		mem = tab_new(&t, cap, &size);
		CU_ASSERT((t.nbuckets & (t.nbuckets - 1)) == 0);
		CU_ASSERT(t.nbuckets >= 2 * cap && t.nbuckets < 4 * cap);
		munmap(mem, size);
	}
}

static void test_capacity_exact(void)
{
	static const uint32_t caps[] = {1, 2, 7, 64, 100};

	for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
		uint32_t cap = caps[k];
		unsigned char seen[100] = {0};
		mp_chtab_t t;
		size_t size;
		void *mem = tab_new(&t, cap, &size);
		char nm[NB];
		int rc, ok = 1;

		for (uint32_t i = 0; i < cap; i++) {
			name_of(nm, "cap-", i);
			rc = mp_chtab_insert(&t, nm);
			ok &= rc >= 0 && rc < (int)cap && !seen[rc];
			if (rc >= 0 && rc < (int)cap)
				seen[rc] = 1;
		}
		CU_ASSERT(ok);
		CU_ASSERT_EQUAL(mp_chtab_count(&t), (int)cap);
		CU_ASSERT_EQUAL(mp_chtab_insert(&t, "one-too-many"), -ENOSPC);
		CU_ASSERT_EQUAL(mp_chtab_insert(&t, "cap-0"), -EEXIST);
		CU_ASSERT_EQUAL(mp_chtab_count(&t), (int)cap);
		/* Reuse: the one freed slot is the one handed out next. */
		rc = mp_chtab_remove(&t, "cap-0");
		CU_ASSERT(rc >= 0);
		CU_ASSERT_EQUAL(mp_chtab_insert(&t, "one-too-many"), rc);
		CU_ASSERT_EQUAL(mp_chtab_insert(&t, "cap-0"), -ENOSPC);
		CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
		munmap(mem, size);
	}
}

static void test_duplicates_and_names(void)
{
	mp_chtab_t t;
	size_t size;
	void *mem = tab_new(&t, 16, &size);
	char n47[NB + 1], n48[NB + 1], out[NB];
	int s;

	memset(n47, 'a', 47);
	n47[47] = '\0';
	memset(n48, 'a', 48);
	n48[48] = '\0';
	s = mp_chtab_insert(&t, "dup");
	CU_ASSERT(s >= 0);
	CU_ASSERT_EQUAL(mp_chtab_insert(&t, "dup"), -EEXIST);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 1);

	CU_ASSERT_EQUAL(mp_chtab_insert(&t, n48), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, n48), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(mp_chtab_remove(&t, n48), -ENAMETOOLONG);
	s = mp_chtab_insert(&t, n47);
	CU_ASSERT(s >= 0);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, n47), s);
	CU_ASSERT(mp_chtab_slot_name(&t, s, out) >= 0);
	CU_ASSERT_STRING_EQUAL(out, n47);
	/* A prefix of a stored name is another name. */
	n47[46] = '\0';
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, n47), -ENOENT);
	CU_ASSERT(mp_chtab_insert(&t, n47) >= 0);

	CU_ASSERT_EQUAL(mp_chtab_insert(&t, ""), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, ""), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_remove(&t, ""), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_insert(&t, NULL), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, -1, out), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, 16, out), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, 0, NULL), -EINVAL);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 3);
	munmap(mem, size);
}

static void test_lookup_remove(void)
{
	mp_chtab_t t;
	size_t size;
	void *mem = tab_new(&t, 200, &size);
	int slot[200], ok = 1;
	char nm[NB];

	for (unsigned i = 0; i < 200; i++) {
		name_of(nm, "lr-", i);
		slot[i] = mp_chtab_insert(&t, nm);
		ok &= slot[i] >= 0;
	}
	CU_ASSERT(ok);
	for (unsigned i = 0; i < 200; i++) {
		name_of(nm, "lr-", i);
		ok &= mp_chtab_lookup(&t, nm) == slot[i];
	}
	CU_ASSERT(ok);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "lr-200"), -ENOENT);
	for (unsigned i = 0; i < 200; i += 2) {
		name_of(nm, "lr-", i);
		ok &= mp_chtab_remove(&t, nm) == slot[i];
		ok &= mp_chtab_lookup(&t, nm) == -ENOENT;
		ok &= mp_chtab_remove(&t, nm) == -ENOENT;
	}
	CU_ASSERT(ok);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 100);
	CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
	CU_ASSERT_EQUAL(check_fill(&t), 0);
	munmap(mem, size);
}

/* Backward-shift deletion moves bucket entries, never slots. */
static void test_slots_stable(void)
{
	enum { CAP = 64 };
	mp_chtab_t t;
	size_t size;
	void *mem = tab_new(&t, CAP, &size);
	int slot[CAP], order[CAP], ok = 1;
	char nm[NB];

	for (unsigned i = 0; i < CAP; i++) {
		name_of(nm, "st-", i);
		slot[i] = mp_chtab_insert(&t, nm);
		order[i] = (int)i;
	}
	for (int i = CAP - 1; i > 0; i--) {
		int j = (int)(mp_test_rand() % (unsigned)(i + 1)), x = order[i];

		order[i] = order[j];
		order[j] = x;
	}
	for (int k = 0; k < CAP; k++) {
		name_of(nm, "st-", (unsigned)order[k]);
		ok &= mp_chtab_remove(&t, nm) == slot[order[k]];
		slot[order[k]] = -1;
		for (unsigned i = 0; i < CAP; i++) {
			name_of(nm, "st-", i);
			ok &= mp_chtab_lookup(&t, nm) ==
			      (slot[i] < 0 ? -ENOENT : slot[i]);
		}
	}
	CU_ASSERT(ok);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 0);
	munmap(mem, size);
}

static void test_generation(void)
{
	mp_chtab_t t;
	size_t size;
	void *mem = tab_new(&t, 4, &size);
	char out[NB];
	int64_t g1, g2;
	int s;

	s = mp_chtab_insert(&t, "gen");
	CU_ASSERT_FATAL(s >= 0);
	g1 = mp_chtab_slot_name(&t, s, out);
	CU_ASSERT(g1 >= 0);
	CU_ASSERT_STRING_EQUAL(out, "gen");
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, s, out), g1); /* stable */
	CU_ASSERT_EQUAL(mp_chtab_remove(&t, "gen"), s);
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, s, out), -ENOENT);
	CU_ASSERT_EQUAL(mp_chtab_insert(&t, "gen"), s);
	g2 = mp_chtab_slot_name(&t, s, out);
	/* One bump for the remove, one for the insert. */
	CU_ASSERT_EQUAL(g2, g1 + 2);
	munmap(mem, size);
}

/* Random operations against a reference model. */
static int churn(mp_chtab_t *t, uint32_t cap, unsigned uni, int ops)
{
	int *mslot = malloc(uni * sizeof(int));
	int *owner = malloc(cap * sizeof(int));
	int64_t *gen = malloc(cap * sizeof(int64_t));
	int mcount = 0, bad = 0;
	char nm[NB], out[NB];

	for (unsigned i = 0; i < uni; i++)
		mslot[i] = -1;
	for (uint32_t s = 0; s < cap; s++) {
		owner[s] = -1;
		gen[s] = -1; /* not seen yet */
	}
	for (int op = 0; op < ops && bad < 10; op++) {
		unsigned r = mp_test_rand(), i = r % uni, kind = (r >> 20) % 3;
		int rc;

		name_of(nm, "churn-", i);
		switch (kind) {
		case 0:
			rc = mp_chtab_insert(t, nm);
			if (mslot[i] >= 0) {
				bad += rc != -EEXIST;
			} else if (mcount == (int)cap) {
				bad += rc != -ENOSPC;
			} else if (rc < 0 || rc >= (int)cap || owner[rc] >= 0) {
				bad++;
			} else {
				int64_t g = mp_chtab_slot_name(t, rc, out);

				/* Bumped by the remove and by this insert. */
				bad += gen[rc] >= 0 && g != gen[rc] + 2;
				bad += strcmp(out, nm) != 0;
				gen[rc] = g;
				mslot[i] = rc;
				owner[rc] = (int)i;
				mcount++;
			}
			break;
		case 1:
			rc = mp_chtab_remove(t, nm);
			if (mslot[i] < 0) {
				bad += rc != -ENOENT;
			} else if (rc != mslot[i]) {
				bad++;
			} else {
				owner[rc] = -1;
				mslot[i] = -1;
				mcount--;
			}
			break;
		default:
			rc = mp_chtab_lookup(t, nm);
			bad += rc != (mslot[i] < 0 ? -ENOENT : mslot[i]);
			break;
		}
		if (op % 5000 == 0) {
			bad += mp_chtab_count(t) != mcount;
			bad += check_consistent(t, NULL) != 0;
		}
	}
	/* Every slot holds what the model says, at the last generation. */
	for (uint32_t s = 0; s < cap; s++) {
		int64_t g = mp_chtab_slot_name(t, (int)s, out);

		if (owner[s] < 0) {
			bad += g != -ENOENT;
		} else {
			name_of(nm, "churn-", (unsigned)owner[s]);
			bad += g != gen[s] || strcmp(out, nm) != 0;
		}
	}
	bad += mp_chtab_count(t) != mcount;
	free(mslot);
	free(owner);
	free(gen);
	return bad;
}

static void test_churn_against_model(void)
{
	static const struct {
		uint32_t cap;
		unsigned uni;
		int ops;
	} runs[] = {
		{512, 1024, 100000}, /* fills up: ENOSPC paths */
		{512, 300, 50000},   /* never full: long probe runs */
		{1, 3, 2000},
		{3, 8, 5000},
	};

	for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
		mp_chtab_t t;
		size_t size;
		void *mem = tab_new(&t, runs[k].cap, &size);

		CU_ASSERT_EQUAL(
			churn(&t, runs[k].cap, runs[k].uni, runs[k].ops), 0);
		CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
		CU_ASSERT_EQUAL(check_fill(&t), 0);
		munmap(mem, size);
	}
}

/* ---- several processes ---- */

enum { NPROC = 4, DISJ = 48, SHARED = 32, CONC_OPS = 20000 };

struct conc {
	uint32_t ins_ok[SHARED];
	uint32_t rem_ok[SHARED];
	int32_t mine[NPROC]; /* disjoint names each process holds at end */
};

static int conc_worker(mp_chtab_t *t, struct conc *c, int p)
{
	int mslot[DISJ];
	char nm[NB];
	int held = 0;

	for (int i = 0; i < DISJ; i++)
		mslot[i] = -1;
	for (int op = 0; op < CONC_OPS; op++) {
		unsigned r = mp_test_rand();
		unsigned kind = (r >> 24) % 3;
		int rc;

		if (r & 1) {
			/* Own names: results are exactly predictable. */
			unsigned i = (r >> 1) % DISJ;

			snprintf(nm, NB, "d%d-%u", p, i);
			if (kind == 0) {
				rc = mp_chtab_insert(t, nm);
				if (mslot[i] >= 0 ? rc != -EEXIST : rc < 0)
					return 1;
				if (mslot[i] < 0) {
					mslot[i] = rc;
					held++;
				}
			} else if (kind == 1) {
				rc = mp_chtab_remove(t, nm);
				if (rc != (mslot[i] < 0 ? -ENOENT : mslot[i]))
					return 2;
				if (mslot[i] >= 0) {
					mslot[i] = -1;
					held--;
				}
			} else {
				rc = mp_chtab_lookup(t, nm);
				if (rc != (mslot[i] < 0 ? -ENOENT : mslot[i]))
					return 3;
			}
		} else {
			/* Shared names: any outcome, but a consistent one. */
			unsigned i = (r >> 1) % SHARED;

			snprintf(nm, NB, "shared-%u", i);
			if (kind == 0) {
				rc = mp_chtab_insert(t, nm);
				if (rc >= 0)
					__atomic_add_fetch(&c->ins_ok[i], 1,
							   __ATOMIC_RELAXED);
				else if (rc != -EEXIST)
					return 4;
			} else if (kind == 1) {
				rc = mp_chtab_remove(t, nm);
				if (rc >= 0)
					__atomic_add_fetch(&c->rem_ok[i], 1,
							   __ATOMIC_RELAXED);
				else if (rc != -ENOENT)
					return 5;
			} else {
				rc = mp_chtab_lookup(t, nm);
				if (rc < 0 && rc != -ENOENT)
					return 6;
			}
		}
	}
	c->mine[p] = held;
	return 0;
}

static void test_concurrent_processes(void)
{
	mp_chtab_t t;
	size_t size;
	void *mem = tab_new(&t, 256, &size);
	struct conc *c = mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[NPROC];
	int expect = 0, used = 0, ok = 1;
	char nm[NB];

	CU_ASSERT_FATAL(c != MAP_FAILED);
	memset(c, 0, sizeof(*c));
	for (int p = 0; p < NPROC; p++) {
		pids[p] = mp_test_fork();
		if (pids[p] == 0) {
			for (int k = 0; k <= p; k++)
				mp_test_rand(); /* different streams */
			_exit(conc_worker(&t, c, p));
		}
	}
	for (int p = 0; p < NPROC; p++) {
		int st = mp_test_wait(pids[p], 30000);

		CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		expect += c->mine[p];
	}
	for (unsigned i = 0; i < SHARED; i++) {
		int d = (int)c->ins_ok[i] - (int)c->rem_ok[i];

		name_of(nm, "shared-", i);
		ok &= d == 0 || d == 1;
		ok &= (mp_chtab_lookup(&t, nm) >= 0) == (d == 1);
		expect += d;
	}
	CU_ASSERT(ok);
	CU_ASSERT_EQUAL(check_consistent(&t, &used), 0);
	CU_ASSERT_EQUAL(used, expect);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), expect);
	CU_ASSERT_EQUAL(check_fill(&t), 0);
	munmap(c, sizeof(*c));
	munmap(mem, size);
}

/* The table in a named segment, used by a process that opens it. */
static void test_attach_through_segment(void)
{
	char name[MP_SHM_NAME_MAX];
	size_t size = MP_SHM_HDR_SIZE + mp_chtab_size(32);
	mp_shm_t seg;
	mp_chtab_t t;
	pid_t pid;
	int st;

	mp_test_shm_name(name, sizeof(name), "chtab");
	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&seg, name, 0x42, 1, size, 0600, (gid_t)-1), 0);
	CU_ASSERT_EQUAL_FATAL(mp_chtab_init(&t, mp_shm_payload(&seg),
					    mp_shm_payload_size(&seg), 32),
			      0);
	CU_ASSERT_EQUAL(mp_chtab_insert(&t, "from-parent"), 0);
	mp_shm_publish(&seg);
	pid = mp_test_fork();
	if (pid == 0) {
		mp_shm_t o;
		mp_chtab_t u;

		if (mp_shm_open(&o, name, 0x42, 1, 0) ||
		    mp_chtab_attach(&u, mp_shm_payload(&o),
				    mp_shm_payload_size(&o)))
			_exit(1);
		if (mp_chtab_lookup(&u, "from-parent") != 0)
			_exit(2);
		if (mp_chtab_insert(&u, "from-child") != 1)
			_exit(3);
		mp_shm_close(&o);
		_exit(0);
	}
	st = mp_test_wait(pid, 10000);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "from-child"), 1);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 2);
	mp_shm_close(&seg);
}

/* ---- faults ---- */

static void churn_forever(mp_chtab_t *t)
{
	char nm[NB];

	for (;;) {
		unsigned r = mp_test_rand();

		name_of(nm, "k-", r % 96);
		if (r & 0x100000)
			mp_chtab_insert(t, nm);
		else
			mp_chtab_remove(t, nm);
	}
}

static void test_sigkill_holding_lock(void)
{
	enum { CAP = 64, WANT = 8, TRIES = 300 };
	mp_chtab_t t;
	size_t size;
	void *mem = tab_new(&t, CAP, &size);
	int hits = 0, misses = 0, ok = 1;

	for (int a = 0; a < TRIES && hits < WANT; a++) {
		pid_t churner, probe;
		int st, rc;

		mp_test_rand();
		churner = mp_test_fork();
		if (churner == 0)
			churn_forever(&t);
		usleep(200 + mp_test_rand() % 2000);
		kill(churner, SIGSTOP);
		waitpid(churner, &st, WUNTRACED);
		/* Does the stopped churner hold the lock?  A probe that cannot
		 * count within 100 ms says it does. */
		probe = mp_test_fork();
		if (probe == 0)
			_exit(mp_chtab_count(&t) >= 0 ? 0 : 1);
		st = mp_test_wait(probe, 100);
		if (st != -1) {
			ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
			misses++;
			mp_test_kill(churner);
		} else {
			hits++;
			mp_test_kill(churner); /* dies holding the lock */
			st = mp_test_wait(probe, 4000);
			/* The probe was repaired and answered, well before
			 * the 5 s lock deadline. */
			ok &= st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
			if (st == -1)
				mp_test_kill(probe);
		}
		rc = check_consistent(&t, NULL);
		if (rc)
			fprintf(stderr, "\n  inconsistent (%d) after kill %d ",
				rc, a);
		ok &= rc == 0;
	}
	fprintf(stderr, "\n  %d deaths inside the lock, %d outside ", hits,
		misses);
	CU_ASSERT(ok);
	CU_ASSERT(hits >= WANT);
	CU_ASSERT_EQUAL(check_fill(&t), 0);
	CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
	munmap(mem, size);
}

/*
 * A holder that dies at each point of an update, made deterministic: a
 * child takes the table lock itself, leaves the table exactly as an insert
 * or remove killed at that point would, and dies.  This mirrors the
 * private layout of mp_chtab.c (header with the lock at offset 64, then
 * 64-byte slots {in_use, generation, hash, next_free, name[48]}, then the
 * buckets) and is white-box on purpose: the next operation must come back
 * with the right answer, which only a repair done before it can give.
 */
struct fake_slot {
	uint32_t in_use, generation, hash, next_free;
	char name[48];
};

enum {
	DIE_INSERT_COMMITTED,
	DIE_INSERT_UNCOMMITTED,
	DIE_REMOVE_UNCOMMITTED,
	DIE_MID_SHIFT
};

static void die_mid_update(mp_chtab_t *t, unsigned char *mem, size_t size,
			   int how, int slot)
{
	size_t tail = (size_t)t->capacity * 64 + (size_t)t->nbuckets * 4;
	struct fake_slot *sl = (struct fake_slot *)(mem + size - tail);
	uint32_t *bk = (uint32_t *)(sl + t->capacity);
	uint32_t *hdr = (uint32_t *)mem; /* [5] count, [6] free head */
	pid_t pid = mp_test_fork();

	if (pid == 0) {
		if (mp_lock_acquire((mp_lock_sh_t *)(mem + 64),
				    MP_TIME_FOREVER) != 0)
			_exit(1);
		switch (how) {
		case DIE_INSERT_COMMITTED:
			/* popped, written, committed; index and count not */
			hdr[6] = sl[slot].next_free;
			strcpy(sl[slot].name, "half-in");
			sl[slot].hash = 12345;
			sl[slot].in_use = 1;
			break;
		case DIE_INSERT_UNCOMMITTED:
			/* popped and written, not committed */
			hdr[6] = sl[slot].next_free;
			strcpy(sl[slot].name, "half-out");
			break;
		case DIE_REMOVE_UNCOMMITTED:
			/* uncommitted; still in the index, count unchanged */
			sl[slot].in_use = 0;
			break;
		default:
			/* index entry gone, shift not done, slot still used */
			for (uint32_t b = 0; b < t->nbuckets; b++)
				if (bk[b] == (uint32_t)slot + 1)
					bk[b] = 0;
			break;
		}
		raise(SIGKILL);
	}
	mp_test_wait(pid, 5000);
}

static void test_dies_mid_update(void)
{
	enum { CAP = 32 };
	mp_chtab_t t;
	size_t size;
	unsigned char *mem = tab_new(&t, CAP, &size);
	char nm[NB];
	int s, used;

	/* A crowded table, so probe runs are long. */
	for (unsigned i = 0; i < 20; i++) {
		name_of(nm, "mid-", i);
		CU_ASSERT_FATAL(mp_chtab_insert(&t, nm) >= 0);
	}
	s = mp_chtab_insert(&t, "tmp");
	CU_ASSERT_EQUAL(mp_chtab_remove(&t, "tmp"), s); /* s is free head */

	die_mid_update(&t, mem, size, DIE_INSERT_COMMITTED, s);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "half-in"), s);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 21);
	CU_ASSERT_EQUAL(check_consistent(&t, &used), 0);
	CU_ASSERT_EQUAL(check_fill(&t), 0);

	s = mp_chtab_remove(&t, "half-in");
	CU_ASSERT(s >= 0);
	die_mid_update(&t, mem, size, DIE_INSERT_UNCOMMITTED, s);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "half-out"), -ENOENT);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 20);
	CU_ASSERT_EQUAL(check_fill(&t), 0); /* the popped slot is back */

	s = mp_chtab_lookup(&t, "mid-7");
	die_mid_update(&t, mem, size, DIE_REMOVE_UNCOMMITTED, s);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "mid-7"), -ENOENT);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 19);
	CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
	CU_ASSERT_EQUAL(check_fill(&t), 0);

	for (unsigned i = 0; i < 20; i++) {
		name_of(nm, "mid-", i);
		if (i == 7)
			continue;
		s = mp_chtab_lookup(&t, nm);
		die_mid_update(&t, mem, size, DIE_MID_SHIFT, s);
		CU_ASSERT_EQUAL(mp_chtab_lookup(&t, nm), s);
	}
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 19);
	CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
	CU_ASSERT_EQUAL(check_fill(&t), 0);
	munmap(mem, size);
}

/* Damage an operation detects is reported once, then rebuilt away. */
static void test_detected_damage_rebuilt(void)
{
	enum { CAP = 16 };
	mp_chtab_t t;
	size_t size;
	unsigned char *mem = tab_new(&t, CAP, &size);
	size_t tail = (size_t)CAP * 64 + (size_t)t.nbuckets * 4;
	struct fake_slot *sl = (struct fake_slot *)(mem + size - tail);
	uint32_t *bk = (uint32_t *)(sl + CAP);
	int s, f, hits = 0;

	s = mp_chtab_insert(&t, "victim");
	f = mp_chtab_insert(&t, "gone");
	CU_ASSERT_EQUAL_FATAL(mp_chtab_remove(&t, "gone"), f);
	/* The index now names a free slot where "victim" was. */
	for (uint32_t b = 0; b < t.nbuckets; b++)
		if (bk[b] == (uint32_t)s + 1) {
			bk[b] = (uint32_t)f + 1;
			hits++;
		}
	CU_ASSERT_EQUAL_FATAL(hits, 1);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "victim"), -EBADMSG);
	CU_ASSERT_EQUAL(mp_chtab_lookup(&t, "victim"), s);
	CU_ASSERT_EQUAL(check_consistent(&t, NULL), 0);
	/* An invalid name in a used slot (no NUL) is dropped by the rebuild. */
	memset(sl[s].name, 'q', sizeof(sl[s].name));
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, s, (char[NB]){0}), -EBADMSG);
	CU_ASSERT_EQUAL(mp_chtab_slot_name(&t, s, (char[NB]){0}), -ENOENT);
	CU_ASSERT_EQUAL(mp_chtab_count(&t), 0);
	CU_ASSERT_EQUAL(check_fill(&t), 0);
	munmap(mem, size);
}

/* Only errors or valid answers, whatever the scribbles. */
static int checked_ops(mp_chtab_t *t, int n, int *badmsg)
{
	uint32_t cap = t->capacity;
	char nm[NB], out[NB];

	for (int k = 0; k < n; k++) {
		unsigned r = mp_test_rand();
		int rc;
		int64_t g;

		name_of(nm, "cor-", r % 80);
		switch ((r >> 16) % 5) {
		case 0:
			rc = mp_chtab_insert(t, nm);
			if (rc >= 0) {
				if (rc >= (int)cap)
					return 1;
				g = mp_chtab_slot_name(t, rc, out);
				if (g >= 0 && strcmp(out, nm) != 0)
					return 2;
			} else if (rc != -EEXIST && rc != -ENOSPC &&
				   rc != -EBADMSG) {
				return 3;
			}
			break;
		case 1:
			rc = mp_chtab_lookup(t, nm);
			if (rc >= 0) {
				if (rc >= (int)cap)
					return 4;
				g = mp_chtab_slot_name(t, rc, out);
				if (g >= 0 && strcmp(out, nm) != 0)
					return 5;
			} else if (rc != -ENOENT && rc != -EBADMSG) {
				return 6;
			}
			break;
		case 2:
			rc = mp_chtab_remove(t, nm);
			if (rc >= (int)cap ||
			    (rc < 0 && rc != -ENOENT && rc != -EBADMSG))
				return 7;
			break;
		case 3:
			rc = mp_chtab_count(t);
			if (rc > (int)cap || (rc < 0 && rc != -EBADMSG))
				return 8;
			break;
		default:
			g = mp_chtab_slot_name(t, (int)((r >> 3) % cap), out);
			if (g >= 0 && (strlen(out) < 1 ||
				       strlen(out) > MP_CHTAB_NAME_MAX))
				return 9;
			if (g < 0 && g != -ENOENT && g != -EBADMSG)
				return 10;
			rc = (int)g;
			break;
		}
		*badmsg += rc == -EBADMSG;
	}
	return 0;
}

static void test_corruption_scribbles(void)
{
	enum { CAP = 64, NBK = 128, ROUNDS = 3000 };
	mp_chtab_t t;
	size_t size;
	unsigned char *mem = tab_new(&t, CAP, &size);
	/* Layout knowledge, for aiming only: 64-byte slots and 32-bit
	 * buckets follow the header, whose lock we leave alone (a scribbled
	 * mutex is a wedged lock, tested nowhere cheaply). */
	size_t tail = (size_t)CAP * 64 + NBK * 4, hdr = size - tail;
	uint32_t *bk = (uint32_t *)(mem + hdr + (size_t)CAP * 64);
	int badmsg = 0, rc = 0;

	CU_ASSERT_FATAL(hdr >= 64 && hdr < size);
	CU_ASSERT_EQUAL(checked_ops(&t, 200, &badmsg), 0);
	for (int round = 0; round < ROUNDS && rc == 0; round++) {
		unsigned r = mp_test_rand();

		switch (r % 6) {
		case 0: /* a random byte anywhere past the lock */
			mem[hdr + (r >> 8) % tail] = (unsigned char)r;
			break;
		case 1: /* a bucket gets a plausible slot number */
			bk[(r >> 8) % NBK] = (r >> 16) % (CAP + 3);
			break;
		case 2: /* a bucket gets garbage */
			bk[(r >> 8) % NBK] = mp_test_rand();
			break;
		case 3: /* a slot word gets a small value */
			((uint32_t *)(mem + hdr))[(r >> 8) % (CAP * 16)] =
				(r >> 24) % 4;
			break;
		case 4: /* count or free-list head */
			((uint32_t *)mem)[4 + (r >> 8) % 4] =
				(r >> 16) % (CAP + 3);
			break;
		default: /* a name byte cleared or set */
			mem[hdr + ((r >> 8) % CAP) * 64 + 16 + (r >> 20) % 48] =
				(r & 0x80) ? 0 : 'z';
			break;
		}
		rc = checked_ops(&t, 10, &badmsg);
	}
	fprintf(stderr, "\n  %d operations saw EBADMSG ", badmsg);
	CU_ASSERT_EQUAL(rc, 0);
	CU_ASSERT(badmsg > 0);
	munmap(mem, size);
}

static const struct mp_test_case tests[] = {
	{"size, init, attach validation", test_size_init_attach},
	{"capacity exact, ENOSPC, reuse after remove", test_capacity_exact},
	{"duplicates, 47/48-byte and empty names", test_duplicates_and_names},
	{"lookup and remove", test_lookup_remove},
	{"slots stable while other names are removed", test_slots_stable},
	{"generation changes on remove and insert", test_generation},
	{"100k random operations against a model", test_churn_against_model},
	{"4 processes, disjoint and shared names", test_concurrent_processes},
	{"table attached through a named segment", test_attach_through_segment},
	{"process SIGKILLed holding the table lock", test_sigkill_holding_lock},
	{"holder dies mid-insert, mid-remove, mid-shift: repaired",
	 test_dies_mid_update},
	{"index naming a free slot: EBADMSG, then rebuilt",
	 test_detected_damage_rebuilt},
	{"scribbles on index, slots, counters", test_corruption_scribbles},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_chtab", 60);
	return mp_test_main("chtab", tests);
}
