/*
 * mp_chtab — the channel table in shared memory (see mp_chtab.h).
 *
 * Layout of the region (offsets only, no pointers):
 *
 *   struct mp_chtab_sh       header: magic, version, capacity, nbuckets,
 *                            count, free-list head, then the robust lock
 *   struct chtab_slot[cap]   64 bytes each: in_use, generation, hash,
 *                            next_free, name[48] (NUL-terminated)
 *   uint32_t bucket[nb]      nb = 2^k >= 2 * cap; slot + 1, 0 = empty
 *
 * The region must be 8-byte aligned (init and attach refuse it otherwise);
 * a segment payload (mp_shm_payload) is 64-byte aligned.
 *
 * Invariants, true whenever the lock is free:
 * - The slot array is the truth.  A slot with in_use == 1 holds a valid
 *   name (1..47 bytes and a NUL) and that name's hash; no two in-use slots
 *   hold the same name.
 * - Every in-use slot is in the index exactly once, reachable by linear
 *   probing from bucket (hash & (nb - 1)) without crossing an empty bucket
 *   (deletion shifts later entries back, so there are no tombstones).  The
 *   index holds nothing else.  Slots never move: only bucket entries do.
 * - Every free slot is on the free list (linked through next_free), and
 *   count is the number of in-use slots.
 * - A slot's generation is bumped on each insert and each remove.
 *
 * Crash repair.  A slot's in_use flag is the commit point: insert writes
 * name, hash and generation first and sets in_use last (release store);
 * remove clears in_use first and only then edits the index and free list.
 * So a holder killed anywhere leaves every slot either fully in use or
 * free, and the next acquirer (told MP_LOCK_REPAIR) rebuilds the index,
 * the free list and count from the slot array alone (chtab_rebuild).  All
 * other data is guarded by the lock, so only this crash ordering needs
 * atomics; the release on in_use keeps the compiler and CPU from sinking
 * the name stores past the commit.
 *
 * Untrusted memory.  Any process mapping the region can scribble on it, so
 * every value read from it is read once (relaxed atomic loads: no
 * re-fetch between check and use), checked against the handle's trusted
 * capacity and nbuckets, and names are copied out before they are
 * compared.  A probe visits at most nb buckets, so a corrupt index cannot
 * loop.  An inconsistency found by an operation makes it fail with
 * -EBADMSG, and the table is rebuilt from its slots before the lock is
 * released, so the damage does not outlive that call.  Slots whose name
 * is invalid, and later duplicates of a name, are dropped by a rebuild.
 *
 * The table lock is taken with a deadline (CHTAB_LOCK_NS).  Every critical
 * section is O(1) except a rebuild, which is O(capacity); a lock not
 * obtained by then is wedged (scribbled on, or held by a stopped process),
 * and the operation fails with -EBADMSG rather than hanging.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "mp_chtab.h"
#include "mp_lock.h"
#include "mp_time.h"

#define CHTAB_MAGIC   0x0042415448435050ULL /* "PPCHTAB" */
#define CHTAB_VERSION 1
#define CHTAB_CAP_MAX (1u << 24)
#define CHTAB_LOCK_NS (5 * 1000000000LL)
#define NAME_BYTES    (MP_CHTAB_NAME_MAX + 1)

struct chtab_slot {
	uint32_t in_use;     /* commit flag, see the banner */
	uint32_t generation;
	uint32_t hash;       /* hash of name, for probing and backward shift */
	uint32_t next_free;  /* free slots: next free slot + 1, 0 = end */
	char     name[NAME_BYTES];
};
_Static_assert(sizeof(struct chtab_slot) == 64, "chtab slot size");

struct mp_chtab_sh {
	uint64_t magic;
	uint32_t version;
	uint32_t capacity;
	uint32_t nbuckets;
	uint32_t count;
	uint32_t free_head;  /* first free slot + 1, 0 = none */
	uint32_t slot_size;  /* sizeof(struct chtab_slot): layout check */
	uint8_t  reserved[32];
	/* The lock gets whole cache lines of its own, and the slots start
	 * on a 64-byte boundary; padded by hand (not _Alignas) so that the
	 * region itself needs only 8-byte alignment. */
	union {
		mp_lock_sh_t lock;
		uint8_t lock_space[(sizeof(mp_lock_sh_t) + 63) / 64 * 64];
	};
};
_Static_assert(offsetof(struct mp_chtab_sh, lock) == 64, "chtab header");
_Static_assert(sizeof(struct mp_chtab_sh) % 64 == 0, "chtab header size");
_Static_assert(_Alignof(struct mp_chtab_sh) <= 8, "chtab alignment");

/* Single, untorn accesses to shared words; ordering comes from the lock. */
static inline uint32_t ld32(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void st32(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline struct chtab_slot *slots(const mp_chtab_t *t)
{
	return (struct chtab_slot *)((char *)t->sh +
				     sizeof(struct mp_chtab_sh));
}

static inline uint32_t *buckets(const mp_chtab_t *t)
{
	return (uint32_t *)(slots(t) + t->capacity);
}

static uint32_t nbuckets_for(uint32_t capacity)
{
	uint32_t nb = 1;

	while (nb < 2 * capacity)
		nb <<= 1;
	return nb;
}

size_t mp_chtab_size(uint32_t capacity)
{
	uint64_t n;

	if (capacity == 0 || capacity > CHTAB_CAP_MAX)
		return 0;
	n = sizeof(struct mp_chtab_sh) +
	    (uint64_t)capacity * sizeof(struct chtab_slot) +
	    (uint64_t)nbuckets_for(capacity) * sizeof(uint32_t);
	return n > SIZE_MAX ? 0 : (size_t)n;
}

/* FNV-1a, then a murmur3-style finaliser: FNV alone mixes its last bytes
 * poorly into the low bits, and the low bits pick the bucket. */
static uint32_t name_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* Check a caller's name and copy it, NUL-padded, into key[NAME_BYTES]
 * before the lock is taken (the caller's string may itself live in shared
 * memory).  Returns its length or -errno. */
static int prep_name(const char *name, char *key, uint32_t *hash)
{
	size_t len;

	if (!name)
		return -EINVAL;
	len = strnlen(name, NAME_BYTES);
	if (len == 0)
		return -EINVAL;
	if (len > MP_CHTAB_NAME_MAX)
		return -ENAMETOOLONG;
	memset(key, 0, NAME_BYTES);
	memcpy(key, name, len);
	*hash = name_hash(key, len);
	return (int)len;
}

/*
 * Probe for key.  0: found, *bucket holds it and *slot is its slot.
 * -ENOENT: absent, *bucket is the empty bucket that ends the probe (where
 * an insert goes).  -EBADMSG: the index is corrupt.
 */
static int find(const mp_chtab_t *t, const char *key, size_t len,
		uint32_t hash, uint32_t *bucket, uint32_t *slot)
{
	struct chtab_slot *sl = slots(t);
	uint32_t *bk = buckets(t);
	uint32_t mask = t->nbuckets - 1;
	uint32_t b = hash & mask;
	char copy[NAME_BYTES];

	for (uint32_t n = 0; n < t->nbuckets; n++, b = (b + 1) & mask) {
		uint32_t v = ld32(&bk[b]);
		struct chtab_slot *s;

		if (v == 0) {
			*bucket = b;
			return -ENOENT;
		}
		if (v > t->capacity)
			return -EBADMSG;
		s = &sl[v - 1];
		if (!ld32(&s->in_use))
			return -EBADMSG; /* the index names a free slot */
		if (ld32(&s->hash) != hash)
			continue;
		memcpy(copy, s->name, NAME_BYTES);
		if (memcmp(copy, key, len + 1) == 0) {
			*bucket = b;
			*slot = v - 1;
			return 0;
		}
	}
	/* No empty bucket at all: impossible with count <= capacity < nb. */
	return -EBADMSG;
}

/*
 * Rebuild the index, the free list and count from the slot array (lock
 * held).  Used for crash repair and after detected corruption.  In-use
 * slots with an invalid name, or repeating a name already placed, are
 * freed (and their generation bumped, so holders see them change).
 */
static void chtab_rebuild(mp_chtab_t *t)
{
	struct chtab_slot *sl = slots(t);
	uint32_t *bk = buckets(t);
	uint32_t count = 0, head = 0;
	char copy[NAME_BYTES];

	memset(bk, 0, (size_t)t->nbuckets * sizeof(*bk));
	/* Downwards, so the rebuilt free list runs in ascending order. */
	for (uint32_t i = t->capacity; i-- > 0;) {
		struct chtab_slot *s = &sl[i];
		uint32_t b, dup, hash;
		size_t len;

		if (ld32(&s->in_use)) {
			memcpy(copy, s->name, NAME_BYTES);
			len = strnlen(copy, NAME_BYTES);
			if (len >= 1 && len <= MP_CHTAB_NAME_MAX) {
				hash = name_hash(copy, len);
				st32(&s->hash, hash);
				if (find(t, copy, len, hash, &b, &dup) ==
				    -ENOENT) {
					st32(&bk[b], i + 1);
					count++;
					continue;
				}
			}
			__atomic_store_n(&s->in_use, 0, __ATOMIC_RELEASE);
			st32(&s->generation, ld32(&s->generation) + 1);
		}
		st32(&s->next_free, head);
		head = i + 1;
	}
	st32(&t->sh->count, count);
	st32(&t->sh->free_head, head);
}

static int chtab_lock(mp_chtab_t *t)
{
	int rc = mp_lock_acquire(&t->sh->lock,
				 mp_time_now_ns() + CHTAB_LOCK_NS);

	if (rc < 0)
		return -EBADMSG; /* wedged or unusable lock: see the banner */
	if (rc == MP_LOCK_REPAIR)
		chtab_rebuild(t);
	return 0;
}

/* Leave the critical section; a -EBADMSG result means the operation
 * found the table inconsistent, so rebuild it before anyone else looks. */
static int chtab_unlock(mp_chtab_t *t, int rc)
{
	if (rc == -EBADMSG)
		chtab_rebuild(t);
	mp_lock_release(&t->sh->lock);
	return rc;
}

int mp_chtab_init(mp_chtab_t *t, void *mem, size_t memsize, uint32_t capacity)
{
	struct mp_chtab_sh *sh = mem;
	struct chtab_slot *sl;
	size_t need = mp_chtab_size(capacity);
	int rc;

	if (!t || !mem || need == 0 || memsize < need ||
	    ((uintptr_t)mem & (_Alignof(struct mp_chtab_sh) - 1)))
		return -EINVAL;
	memset(mem, 0, need);
	rc = mp_lock_init(&sh->lock);
	if (rc)
		return rc;
	sh->version = CHTAB_VERSION;
	sh->capacity = capacity;
	sh->nbuckets = nbuckets_for(capacity);
	sh->slot_size = sizeof(struct chtab_slot);
	sh->count = 0;
	sh->free_head = 1;
	t->sh = sh;
	t->capacity = capacity;
	t->nbuckets = sh->nbuckets;
	t->memsize = memsize;
	sl = slots(t);
	for (uint32_t i = 0; i + 1 < capacity; i++)
		sl[i].next_free = i + 2;
	/* Release: an attacher that reads the magic (acquire) sees the whole
	 * formatted table. */
	__atomic_store_n(&sh->magic, CHTAB_MAGIC, __ATOMIC_RELEASE);
	return 0;
}

int mp_chtab_attach(mp_chtab_t *t, void *mem, size_t memsize)
{
	struct mp_chtab_sh *sh = mem;
	uint32_t cap, nb;

	if (!t || !mem)
		return -EINVAL;
	if (memsize < sizeof(*sh) ||
	    ((uintptr_t)mem & (_Alignof(struct mp_chtab_sh) - 1)))
		return -EBADMSG;
	/* Acquire: pairs with the release of the magic in mp_chtab_init(). */
	if (__atomic_load_n(&sh->magic, __ATOMIC_ACQUIRE) != CHTAB_MAGIC ||
	    ld32(&sh->version) != CHTAB_VERSION ||
	    ld32(&sh->slot_size) != sizeof(struct chtab_slot))
		return -EBADMSG;
	cap = ld32(&sh->capacity);
	nb = ld32(&sh->nbuckets);
	if (cap == 0 || cap > CHTAB_CAP_MAX || nb != nbuckets_for(cap) ||
	    mp_chtab_size(cap) > memsize)
		return -EBADMSG;
	t->sh = sh;
	t->capacity = cap;
	t->nbuckets = nb;
	t->memsize = memsize;
	return 0;
}

int mp_chtab_insert(mp_chtab_t *t, const char *name)
{
	char key[NAME_BYTES];
	struct chtab_slot *s;
	uint32_t hash, bucket, slot, count, head, next, gen;
	int len, rc;

	len = prep_name(name, key, &hash);
	if (len < 0)
		return len;
	rc = chtab_lock(t);
	if (rc)
		return rc;
	rc = find(t, key, (size_t)len, hash, &bucket, &slot);
	if (rc == 0) {
		rc = -EEXIST;
		goto out;
	}
	if (rc != -ENOENT)
		goto out;

	/* Check everything before changing anything. */
	count = ld32(&t->sh->count);
	head = ld32(&t->sh->free_head);
	rc = -EBADMSG;
	if (count > t->capacity || head > t->capacity)
		goto out;
	if (head == 0 || count == t->capacity) {
		/* Full: both must agree. */
		rc = head == 0 && count == t->capacity ? -ENOSPC : -EBADMSG;
		goto out;
	}
	s = &slots(t)[head - 1];
	next = ld32(&s->next_free);
	if (ld32(&s->in_use) || next > t->capacity)
		goto out;

	slot = head - 1;
	st32(&t->sh->free_head, next);
	memcpy(s->name, key, NAME_BYTES);
	st32(&s->hash, hash);
	st32(&s->next_free, 0);
	gen = ld32(&s->generation) + 1;
	st32(&s->generation, gen);
	/* Release: commits the slot; the name, hash and generation above are
	 * in memory before in_use says so, whenever this process dies. */
	__atomic_store_n(&s->in_use, 1, __ATOMIC_RELEASE);
	st32(&buckets(t)[bucket], slot + 1);
	st32(&t->sh->count, count + 1);
	rc = (int)slot;
out:
	return chtab_unlock(t, rc);
}

int mp_chtab_lookup(mp_chtab_t *t, const char *name)
{
	char key[NAME_BYTES];
	uint32_t hash, bucket, slot;
	int len, rc;

	len = prep_name(name, key, &hash);
	if (len < 0)
		return len;
	rc = chtab_lock(t);
	if (rc)
		return rc;
	rc = find(t, key, (size_t)len, hash, &bucket, &slot);
	if (rc == 0)
		rc = (int)slot;
	return chtab_unlock(t, rc);
}

/* Backward-shift deletion: empty bucket i, then pull back each following
 * entry of the run that may legally sit at i (i lies cyclically within
 * [home, j) for the entry at j), so every probe stays unbroken. */
static int shift_delete(mp_chtab_t *t, uint32_t i)
{
	struct chtab_slot *sl = slots(t);
	uint32_t *bk = buckets(t);
	uint32_t mask = t->nbuckets - 1;
	uint32_t j = i;

	for (uint32_t n = 0; n < t->nbuckets; n++) {
		uint32_t v, home;

		j = (j + 1) & mask;
		v = ld32(&bk[j]);
		if (v == 0) {
			st32(&bk[i], 0);
			return 0;
		}
		if (v > t->capacity || !ld32(&sl[v - 1].in_use))
			return -EBADMSG;
		home = ld32(&sl[v - 1].hash) & mask;
		if (((j - i) & mask) <= ((j - home) & mask)) {
			st32(&bk[i], v);
			i = j;
		}
	}
	return -EBADMSG;
}

int mp_chtab_remove(mp_chtab_t *t, const char *name)
{
	char key[NAME_BYTES];
	struct chtab_slot *s;
	uint32_t hash, bucket, slot, count, head;
	int len, rc;

	len = prep_name(name, key, &hash);
	if (len < 0)
		return len;
	rc = chtab_lock(t);
	if (rc)
		return rc;
	rc = find(t, key, (size_t)len, hash, &bucket, &slot);
	if (rc)
		goto out;
	count = ld32(&t->sh->count);
	head = ld32(&t->sh->free_head);
	if (count == 0 || count > t->capacity || head > t->capacity) {
		rc = -EBADMSG;
		goto out;
	}
	s = &slots(t)[slot];
	/* Uncommit first: from here a crash leaves the slot free, and the
	 * repair drops it from the index.  (The name is left alone, so no
	 * ordering against later stores is needed; release for symmetry
	 * with insert costs nothing on the lock-held path.) */
	__atomic_store_n(&s->in_use, 0, __ATOMIC_RELEASE);
	st32(&s->generation, ld32(&s->generation) + 1);
	rc = shift_delete(t, bucket);
	if (rc)
		goto out;
	st32(&s->next_free, head);
	st32(&t->sh->free_head, slot + 1);
	st32(&t->sh->count, count - 1);
	rc = (int)slot;
out:
	return chtab_unlock(t, rc);
}

int64_t mp_chtab_slot_name(mp_chtab_t *t, int slot, char *out)
{
	char copy[NAME_BYTES];
	struct chtab_slot *s;
	size_t len;
	int64_t rc;

	if (!out || slot < 0 || (uint32_t)slot >= t->capacity)
		return -EINVAL;
	if (chtab_lock(t))
		return -EBADMSG;
	s = &slots(t)[slot];
	if (!ld32(&s->in_use)) {
		rc = -ENOENT;
	} else {
		rc = ld32(&s->generation);
		memcpy(copy, s->name, NAME_BYTES);
		len = strnlen(copy, NAME_BYTES);
		if (len == 0 || len > MP_CHTAB_NAME_MAX) {
			rc = -EBADMSG;
		} else {
			memcpy(out, copy, len);
			memset(out + len, 0, NAME_BYTES - len);
		}
	}
	chtab_unlock(t, rc == -EBADMSG ? -EBADMSG : 0);
	return rc;
}

int mp_chtab_count(mp_chtab_t *t)
{
	uint32_t count;
	int rc;

	rc = chtab_lock(t);
	if (rc)
		return rc;
	count = ld32(&t->sh->count);
	rc = count > t->capacity ? -EBADMSG : (int)count;
	return chtab_unlock(t, rc);
}
