/*
 * fuzz_chtab — libFuzzer target for the channel table (shm/mp_chtab.c),
 * with the input playing the other processes that share its memory;
 * linked with tests/fuzz_replay.c it replays tests/corpus/chtab in
 * `make check`.
 *
 * The input is a program.  Its first byte picks a capacity; the table is
 * formatted in an exact-size heap buffer, and each following operation
 * either calls the table (insert, lookup, remove, count, slot_name, a
 * second attach) with a name or slot number taken from the input, makes a
 * thread die holding the table lock (the next user rebuilds), or
 * scribbles as a misbehaving peer would: header bytes, the count and the
 * free-list head, any bytes or field of a slot, any bucket of the index.
 * Names come from a small set (so that they collide and repeat) or are
 * raw bytes (empty, embedded NULs, too long).
 *
 * Checked, abort() on any violation (ASan sees any access outside the
 * table and the name buffers, all exact-size heap blocks):
 *   - every call returns a documented error or a valid answer, and the
 *     name checks (-EINVAL, -ENAMETOOLONG) depend on the name alone;
 *   - whatever was scribbled: a name just inserted or found is, at once,
 *     what slot_name reports for its slot and what lookup finds; a slot
 *     just freed by remove reads as free; slot_name fills its buffer with
 *     a valid NUL-padded name;
 *   - after an operation fails with -EBADMSG, or a dead lock holder, the
 *     table has been rebuilt and is consistent: every name slot_name
 *     reports is found by lookup at that slot, and count agrees;
 *   - while nothing that matters has been scribbled since the last such
 *     rebuild, the table behaves exactly as a model map of names to slots
 *     (with generations): inserts, look-ups, removes, counts, -EEXIST,
 *     -ENOSPC, -ENOENT; and a rebuild after a dead holder keeps it.
 *
 * Out of scope: the lock's bytes (the pthread mutex) are never scribbled
 * (glibc may hang or abort on a garbage mutex: mp_lock's and glibc's
 * domain).  The slot and header layout is the one mp_chtab.c documents;
 * layout_check() pins it against the table's behaviour at start-up.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_fuzz.h"
#include "mp_chtab.h"
#include "mp_lock.h"
#include "mp_time.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

#define FAIL(...) FZ_FAIL("fuzz_chtab", __VA_ARGS__)

#define NB	 (MP_CHTAB_NAME_MAX + 1)
#define LOCK_OFF 64
/* Header: 64 bytes, then the lock padded to whole 64-byte lines. */
#define HDR_SIZE (LOCK_OFF + (sizeof(mp_lock_sh_t) + 63) / 64 * 64)
#define SLOT	 64

/* Slot fields: in_use, generation, hash, next_free, then the name. */
#define SLOT_NAME 16

static const uint32_t caps[] = {1, 3, 8, 20};
#define NCAPS  (sizeof(caps) / sizeof(caps[0]))
#define MAXCAP 20

static uint32_t nbuckets_of(uint32_t cap)
{
	uint32_t nb = 1;

	while (nb < 2 * cap)
		nb <<= 1;
	return nb;
}

/* ---- the model, valid while `clean` ---- */

static struct model {
	int clean;
	int used[MAXCAP];
	char name[MAXCAP][NB];
	int gen_known[MAXCAP];
	uint32_t gen[MAXCAP];
} M;

static int m_find(const char *name)
{
	for (int s = 0; s < MAXCAP; s++)
		if (M.used[s] && strcmp(M.name[s], name) == 0)
			return s;
	return -1;
}

static uint32_t m_count(void)
{
	uint32_t n = 0;

	for (int s = 0; s < MAXCAP; s++)
		n += (uint32_t)M.used[s];
	return n;
}

/* ---- names ---- */

/* A heap copy of a name from the input: one of 24 short names, or raw
 * bytes of length 0..55 (NULs and all), always NUL-terminated. */
static char *take_name(struct fz *f)
{
	uint8_t sel = fz_u8(f);
	char *s;
	size_t len;

	if (!(sel & 0x80)) {
		s = fz_alloc(8);
		snprintf(s, 8, "ch%u", sel % 24u);
		return s;
	}
	len = fz_u8(f) % 56;
	s = fz_alloc(len + 1);
	fz_bytes(f, s, len);
	s[len] = '\0';
	return s;
}

/* What the name alone decides: 0 if it is acceptable. */
static int name_err(const char *name)
{
	size_t len = strnlen(name, NB);

	if (len == 0)
		return -EINVAL;
	return len > MP_CHTAB_NAME_MAX ? -ENAMETOOLONG : 0;
}

/* ---- checks ---- */

/* slot_name into an exact-size buffer, with its output checked. */
static int64_t slot_name(mp_chtab_t *t, int slot, char *name_out)
{
	char *out = fz_alloc(NB);
	int64_t rc = mp_chtab_slot_name(t, slot, out);
	size_t len;

	if (slot < 0 || (uint32_t)slot >= t->capacity) {
		if (rc != -EINVAL)
			FAIL("slot_name(%d) of %u slots: %lld", slot,
			     t->capacity, (long long)rc);
	} else if (rc >= 0) {
		if (rc > UINT32_MAX)
			FAIL("generation %lld", (long long)rc);
		len = strnlen(out, NB);
		if (len == 0 || len > MP_CHTAB_NAME_MAX)
			FAIL("slot_name gave a name of %zu bytes", len);
		for (size_t i = len; i < NB; i++)
			if (out[i])
				FAIL("slot_name output not NUL-padded");
		if (name_out)
			memcpy(name_out, out, NB);
	} else if (rc != -ENOENT && rc != -EBADMSG) {
		FAIL("slot_name: unexpected %lld", (long long)rc);
	}
	free(out);
	return rc;
}

/* After a rebuild: the table agrees with itself.  Then the model is
 * taken from it (generations of free slots are unknown). */
static void check_consistent(mp_chtab_t *t)
{
	char names[MAXCAP][NB];
	uint32_t n = 0;
	int64_t g[MAXCAP];
	int rc, used[MAXCAP];

	for (uint32_t s = 0; s < t->capacity; s++) {
		g[s] = slot_name(t, (int)s, names[s]);
		if (g[s] == -EBADMSG)
			FAIL("slot %u corrupt right after a rebuild", s);
		used[s] = g[s] >= 0;
		n += (uint32_t)used[s];
	}
	for (uint32_t s = 0; s < t->capacity; s++) {
		if (!used[s])
			continue;
		rc = mp_chtab_lookup(t, names[s]);
		if (rc != (int)s)
			FAIL("after a rebuild '%s' (slot %u) looks up as %d",
			     names[s], s, rc);
	}
	rc = mp_chtab_count(t);
	if (rc != (int)n)
		FAIL("after a rebuild count %d, slots in use %u", rc, n);
	if (M.clean) {
		/* The rebuild must not have changed anything. */
		for (uint32_t s = 0; s < t->capacity; s++)
			if (used[s] != M.used[s] ||
			    (used[s] &&
			     (strcmp(names[s], M.name[s]) ||
			      (M.gen_known[s] && g[s] != (int64_t)M.gen[s]))))
				FAIL("rebuild of a sound table changed slot %u",
				     s);
	}
	memset(&M, 0, sizeof(M));
	M.clean = 1;
	for (uint32_t s = 0; s < t->capacity; s++) {
		M.used[s] = used[s];
		if (used[s]) {
			memcpy(M.name[s], names[s], NB);
			M.gen_known[s] = 1;
			M.gen[s] = (uint32_t)g[s];
		}
	}
}

/* ---- operations ---- */

enum {
	OP_INSERT,
	OP_LOOKUP,
	OP_REMOVE,
	OP_COUNT,
	OP_SLOT_NAME,
	OP_HDR_BYTES,
	OP_HDR_FIELD,
	OP_SLOT_BYTES,
	OP_SLOT_FIELD,
	OP_BUCKET,
	OP_ATTACH,
	OP_DEAD_HOLDER,
	NOPS
};

static int do_insert(mp_chtab_t *t, struct fz *f)
{
	char *name = take_name(f);
	int rc = mp_chtab_insert(t, name), ne = name_err(name), k;
	char got[NB];

	if (ne) {
		if (rc != ne)
			FAIL("insert of a bad name: %d, expected %d", rc, ne);
	} else if (rc >= 0) {
		if ((uint32_t)rc >= t->capacity)
			FAIL("insert gave slot %d of %u", rc, t->capacity);
		/* Just inserted: found at once, and named by its slot. */
		if (slot_name(t, rc, got) < 0 || strcmp(got, name) != 0)
			FAIL("slot %d does not hold the name just inserted",
			     rc);
		if (mp_chtab_lookup(t, name) != rc)
			FAIL("name just inserted not found at its slot");
	} else if (rc != -EEXIST && rc != -ENOSPC && rc != -EBADMSG) {
		FAIL("insert: unexpected %d", rc);
	}
	if (M.clean && !ne) {
		k = m_find(name);
		if (k >= 0) {
			if (rc != -EEXIST)
				FAIL("insert of a present name: %d", rc);
		} else if (m_count() == t->capacity) {
			if (rc != -ENOSPC)
				FAIL("insert into a full table: %d", rc);
		} else {
			if (rc < 0 || M.used[rc])
				FAIL("insert: %d, model has room", rc);
			M.used[rc] = 1;
			snprintf(M.name[rc], NB, "%s", name);
			M.gen[rc]++;
		}
	}
	free(name);
	return rc;
}

static int do_lookup(mp_chtab_t *t, struct fz *f)
{
	char *name = take_name(f);
	int rc = mp_chtab_lookup(t, name), ne = name_err(name);
	char got[NB];

	if (ne) {
		if (rc != ne)
			FAIL("lookup of a bad name: %d, expected %d", rc, ne);
	} else if (rc >= 0) {
		if ((uint32_t)rc >= t->capacity)
			FAIL("lookup gave slot %d of %u", rc, t->capacity);
		if (slot_name(t, rc, got) < 0 || strcmp(got, name) != 0)
			FAIL("lookup gave slot %d, which holds another name",
			     rc);
	} else if (rc != -ENOENT && rc != -EBADMSG) {
		FAIL("lookup: unexpected %d", rc);
	}
	if (M.clean && !ne &&
	    rc != (m_find(name) >= 0 ? m_find(name) : -ENOENT))
		FAIL("lookup '%s': %d, model %d", name, rc, m_find(name));
	free(name);
	return rc;
}

static int do_remove(mp_chtab_t *t, struct fz *f)
{
	char *name = take_name(f);
	int rc = mp_chtab_remove(t, name), ne = name_err(name), k;

	if (ne) {
		if (rc != ne)
			FAIL("remove of a bad name: %d, expected %d", rc, ne);
	} else if (rc >= 0) {
		if ((uint32_t)rc >= t->capacity)
			FAIL("remove gave slot %d of %u", rc, t->capacity);
		if (slot_name(t, rc, NULL) != -ENOENT)
			FAIL("slot %d still in use after its remove", rc);
	} else if (rc != -ENOENT && rc != -EBADMSG) {
		FAIL("remove: unexpected %d", rc);
	}
	if (M.clean && !ne) {
		k = m_find(name);
		if (rc != (k >= 0 ? k : -ENOENT))
			FAIL("remove '%s': %d, model %d", name, rc, k);
		if (k >= 0) {
			M.used[k] = 0;
			M.gen[k]++;
		}
	}
	free(name);
	return rc;
}

static int do_count(mp_chtab_t *t)
{
	int rc = mp_chtab_count(t);

	if (rc != -EBADMSG && (rc < 0 || (uint32_t)rc > t->capacity))
		FAIL("count: %d of %u", rc, t->capacity);
	if (M.clean && rc != (int)m_count())
		FAIL("count %d, model %u", rc, m_count());
	return rc;
}

static int do_slot_name(mp_chtab_t *t, struct fz *f)
{
	uint8_t mode = fz_u8(f);
	int slot = mode & 1 ? (int)fz_u32(f)
			    : (int)(fz_u8(f) % (t->capacity + 2)) - 1;
	char got[NB];
	int64_t rc = slot_name(t, slot, got);

	if (M.clean && slot >= 0 && (uint32_t)slot < t->capacity) {
		if (!M.used[slot]) {
			if (rc != -ENOENT)
				FAIL("slot_name of free slot %d: %lld", slot,
				     (long long)rc);
		} else if (rc < 0 || strcmp(got, M.name[slot]) != 0 ||
			   (M.gen_known[slot] && rc != (int64_t)M.gen[slot])) {
			FAIL("slot_name(%d): %lld, model '%s' gen %lld", slot,
			     (long long)rc, M.name[slot],
			     (long long)M.gen[slot]);
		}
	}
	return rc == -EBADMSG ? -EBADMSG : 0;
}

/* Overwrite header bytes before the lock.  Only count and free_head
 * matter to the operations (the rest is checked by attach alone). */
static void do_hdr_bytes(mp_chtab_t *t, struct fz *f)
{
	uint8_t *h = (uint8_t *)t->sh, old[8];
	uint32_t off = fz_u8(f) % LOCK_OFF, len = 1 + fz_u8(f) % 8;

	if (off + len > LOCK_OFF)
		len = LOCK_OFF - off;
	memcpy(old, h + off, len);
	fz_bytes(f, h + off, len);
	for (uint32_t i = 0; i < len; i++)
		if (h[off + i] != old[i] && off + i >= 20 && off + i < 28)
			M.clean = 0;
}

/* Set or nudge a 32-bit word: raw, or by a small signed delta. */
static void nudge(struct fz *f, uint8_t *p)
{
	uint32_t v, old;

	memcpy(&v, p, 4);
	old = v;
	if (fz_u8(f) & 1)
		v += (uint32_t)(int32_t)(int8_t)fz_u8(f);
	else
		v = fz_u32(f);
	memcpy(p, &v, 4);
	if (v != old)
		M.clean = 0;
}

/* Header words: capacity, nbuckets, count, free_head, slot_size. */
static void do_hdr_field(mp_chtab_t *t, struct fz *f)
{
	static const uint8_t offs[] = {12, 16, 20, 24, 28};
	uint8_t off = offs[fz_u8(f) % sizeof(offs)];
	int clean = M.clean;

	nudge(f, (uint8_t *)t->sh + off);
	if (off != 20 && off != 24)
		M.clean = clean;
}

static uint8_t *slot_at(mp_chtab_t *t, uint32_t s)
{
	return (uint8_t *)t->sh + HDR_SIZE + (size_t)s * SLOT;
}

static void do_slot_bytes(mp_chtab_t *t, struct fz *f)
{
	uint8_t *s = slot_at(t, fz_u8(f) % t->capacity);
	uint32_t off = fz_u8(f) % SLOT, len = 1 + fz_u8(f) % 16;
	uint8_t old[16];

	if (off + len > SLOT)
		len = SLOT - off;
	memcpy(old, s + off, len);
	fz_bytes(f, s + off, len);
	if (memcmp(old, s + off, len) != 0)
		M.clean = 0;
}

static void do_slot_field(mp_chtab_t *t, struct fz *f)
{
	uint8_t *s = slot_at(t, fz_u8(f) % t->capacity);

	nudge(f, s + 4 * (fz_u8(f) % 4));
}

static void do_bucket(mp_chtab_t *t, struct fz *f)
{
	uint32_t *bk = (uint32_t *)slot_at(t, t->capacity);
	uint32_t b = fz_u16(f) % t->nbuckets, v;
	uint8_t mode = fz_u8(f);

	/* Mostly plausible values: 0 (empty), a slot + 1, one past. */
	v = mode & 1 ? fz_u32(f) : fz_u8(f) % (t->capacity + 2);
	if (bk[b] != v)
		M.clean = 0;
	bk[b] = v;
}

/* A second attach trusts only what the header and memsize agree on. */
static void do_attach(mp_chtab_t *t, void *mem, size_t memsize)
{
	mp_chtab_t t2;
	int rc = mp_chtab_attach(&t2, mem, memsize);

	if (rc == -EBADMSG)
		return;
	if (rc != 0)
		FAIL("attach: unexpected %d", rc);
	if (t2.capacity == 0 || t2.capacity > MAXCAP ||
	    t2.nbuckets != nbuckets_of(t2.capacity) ||
	    mp_chtab_size(t2.capacity) > memsize || t2.sh != t->sh)
		FAIL("attach accepted a geometry that does not fit");
	if (t2.capacity != t->capacity)
		M.clean = 0;
	*t = t2;
}

/* A user that dies holding the table lock: a thread takes it and exits;
 * the next locker rebuilds the table from its slots. */
static void *take_and_exit(void *lock)
{
	mp_lock_acquire(lock, MP_TIME_FOREVER);
	return NULL;
}

static void do_dead_holder(mp_chtab_t *t)
{
	pthread_t th;

	if (pthread_create(&th, NULL, take_and_exit,
			   (uint8_t *)t->sh + LOCK_OFF) != 0)
		return;
	pthread_join(th, NULL);
	check_consistent(t);
}

/* ---- layout self-check ------------------------------------------------ */

static void layout_check(void)
{
	static int done;
	mp_lock_sh_t lk;
	mp_chtab_t t;
	uint32_t w;
	uint8_t *mem;
	size_t size = mp_chtab_size(3);

	if (done)
		return;
	done = 1;
	if (size != HDR_SIZE + 3 * SLOT + 8 * 4)
		FAIL("table size: update the layout here");
	mem = fz_alloc(size);
	if (mp_chtab_init(&t, mem, size, 3) != 0 || mp_lock_init(&lk) != 0)
		FAIL("init");
	if (memcmp(mem + LOCK_OFF, &lk, sizeof(lk)) != 0)
		FAIL("the lock is not at offset %d: update the layout here",
		     LOCK_OFF);
	memcpy(&w, mem + 24, 4); /* free_head: slot 0 + 1 */
	if (w != 1 || mp_chtab_insert(&t, "abc") != 0)
		FAIL("free_head not where expected");
	memcpy(&w, mem + 20, 4); /* count */
	if (w != 1 || memcmp(mem + HDR_SIZE + SLOT_NAME, "abc", 4) != 0)
		FAIL("count or slot name not where expected");
	memcpy(&w, mem + HDR_SIZE, 4); /* in_use */
	if (w != 1)
		FAIL("in_use not where expected");
	memcpy(&w, mem + HDR_SIZE + 4, 4); /* generation */
	if (w != 1)
		FAIL("generation not where expected");
	free(mem);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct fz f = {d, n};
	uint8_t g0 = fz_u8(&f);
	uint32_t cap = caps[g0 % NCAPS];
	size_t memsize = mp_chtab_size(cap);
	void *mem = fz_alloc(memsize);
	/* Bit 7 of the first byte allows one dead lock holder (a thread:
	 * costly, so not in every input). */
	int steps = 0, deaths = g0 >> 7, rc;
	mp_chtab_t t;

	layout_check();
	fz_trace_init();
	if (mp_chtab_init(&t, mem, memsize, cap) != 0)
		FAIL("init");
	memset(&M, 0, sizeof(M));
	M.clean = 1;
	for (int s = 0; s < MAXCAP; s++)
		M.gen_known[s] = 1;

	while (f.n && steps++ < 256) {
		int op = fz_u8(&f) % NOPS;

		if (fz_trace)
			fprintf(stderr, "op %d (clean %d, count %u)\n", op,
				M.clean, m_count());
		rc = 0;
		switch (op) {
		case OP_INSERT:
			rc = do_insert(&t, &f);
			break;
		case OP_LOOKUP:
			rc = do_lookup(&t, &f);
			break;
		case OP_REMOVE:
			rc = do_remove(&t, &f);
			break;
		case OP_COUNT:
			rc = do_count(&t);
			break;
		case OP_SLOT_NAME:
			rc = do_slot_name(&t, &f);
			break;
		case OP_HDR_BYTES:
			do_hdr_bytes(&t, &f);
			break;
		case OP_HDR_FIELD:
			do_hdr_field(&t, &f);
			break;
		case OP_SLOT_BYTES:
			do_slot_bytes(&t, &f);
			break;
		case OP_SLOT_FIELD:
			do_slot_field(&t, &f);
			break;
		case OP_BUCKET:
			do_bucket(&t, &f);
			break;
		case OP_ATTACH:
			do_attach(&t, mem, memsize);
			break;
		default:
			if (deaths) {
				deaths--;
				do_dead_holder(&t);
			}
			break;
		}
		/* -EBADMSG: the table was rebuilt before the lock was let
		 * go, so it must be consistent now. */
		if (rc == -EBADMSG)
			check_consistent(&t);
	}
	free(mem);
	return 0;
}
