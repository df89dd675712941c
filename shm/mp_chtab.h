/*
 * mp_chtab — the channel table: a fixed-capacity name -> slot map that
 * lives in shared memory and is shared by several processes.
 *
 * Names are 1..MP_CHTAB_NAME_MAX bytes.  Each name owns a *slot*, an index
 * in [0, capacity) that stays the same while the name exists, so callers
 * keep per-channel data in their own array indexed by slot.  Every slot
 * also has a generation number bumped on each insert and remove, so a
 * stale slot number held across a remove is detected.
 *
 * Layout: a header, the slot array (name, hash, generation, in-use flag),
 * and an open-addressing index of 2^k >= 2 * capacity buckets holding
 * slot + 1 (0 = empty) with backward-shift deletion: insert, lookup and
 * remove are expected O(1) with no tombstones.  One robust lock (mp_lock)
 * serialises writers and readers; a holder that dies mid-update is repaired
 * by rebuilding the index and free list from the slot array, which is
 * written so that a slot is either fully in use or not.
 *
 * Every index, slot number and length read from the segment is checked
 * against the handle's trusted copies; corruption yields -EBADMSG.
 */
#ifndef MP_CHTAB_H
#define MP_CHTAB_H

#include <stddef.h>
#include <stdint.h>

#define MP_CHTAB_NAME_MAX 47

struct mp_chtab_sh; /* in-segment layout, private to mp_chtab.c */

/* Process-local handle with trusted copies. */
typedef struct mp_chtab {
	struct mp_chtab_sh *sh;
	uint32_t capacity;   /* slots */
	uint32_t nbuckets;   /* power of two >= 2 * capacity */
	size_t   memsize;    /* bytes of the region */
} mp_chtab_t;

/* Bytes of shared memory needed for `capacity` slots (0 if too large). */
size_t mp_chtab_size(uint32_t capacity);

/* Format `mem` (memsize >= mp_chtab_size(capacity)) and attach t to it.
 * 0, -EINVAL (capacity 0 or > 1<<24, memsize too small), or -errno. */
int mp_chtab_init(mp_chtab_t *t, void *mem, size_t memsize, uint32_t capacity);

/* Attach to a formatted table; validates its header against memsize.
 * 0 or -EBADMSG. */
int mp_chtab_attach(mp_chtab_t *t, void *mem, size_t memsize);

/* Insert name.  Returns the slot (>= 0), -EEXIST, -ENOSPC (full),
 * -ENAMETOOLONG, -EINVAL (empty name), -EBADMSG (corrupt table). */
int mp_chtab_insert(mp_chtab_t *t, const char *name);

/* Slot of name, -ENOENT, -ENAMETOOLONG, -EINVAL, -EBADMSG. */
int mp_chtab_lookup(mp_chtab_t *t, const char *name);

/* Remove name; returns the slot it had, -ENOENT, -EINVAL, -EBADMSG. */
int mp_chtab_remove(mp_chtab_t *t, const char *name);

/* Copy the name held in slot into out[MP_CHTAB_NAME_MAX + 1] and return
 * the slot's generation (>= 0 as int64), -ENOENT (slot free), -EINVAL. */
int64_t mp_chtab_slot_name(mp_chtab_t *t, int slot, char *out);

/* Number of names in the table, or -EBADMSG. */
int mp_chtab_count(mp_chtab_t *t);

#endif
