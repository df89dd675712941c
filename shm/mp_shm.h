/*
 * mp_shm — named POSIX shared-memory segments with a validated header.
 *
 * Every segment starts with struct mp_shm_hdr (64 bytes).  The creator
 * fills it, initialises the payload, then publishes the segment; an opener
 * validates magic, layout version, header size and total size against the
 * size of the object as the kernel reports it (fstat), and keeps that
 * trusted size in its process-local handle.  Nothing read from the header
 * is used before it has been checked.
 *
 * Objects are created O_EXCL with the mode given (owner-only by default,
 * never world-writable: the caller's mode is masked with 0660) and
 * optionally handed to a group.  The creator's handle is the owner: closing
 * it unlinks the name.
 */
#ifndef MP_SHM_H
#define MP_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MP_SHM_NAME_MAX 96    /* including the leading '/' and the NUL */
#define MP_SHM_HDR_SIZE 64
#define MP_SHM_READY 0x52454144594d5053ULL /* "SPMYDAER" */

/* In-segment header.  Fixed-width fields only. */
struct mp_shm_hdr {
	uint64_t magic;       /* kind of segment, chosen by the creator */
	uint32_t version;     /* layout version of that kind */
	uint32_t hdr_size;    /* MP_SHM_HDR_SIZE */
	uint64_t total_size;  /* bytes of the object, header included */
	uint32_t generation;  /* bumped by mp_shm_bump_generation() */
	uint32_t creator_pid;
	uint64_t ready;       /* MP_SHM_READY once published */
	uint8_t  reserved[24];
};
_Static_assert(sizeof(struct mp_shm_hdr) == MP_SHM_HDR_SIZE, "shm header size");

/* Process-local handle: the trusted copies. */
typedef struct mp_shm {
	void    *base;        /* the mapping; the header is at base */
	size_t   size;        /* trusted total size (from fstat / create) */
	int      owner;       /* created here: mp_shm_close() unlinks */
	char     name[MP_SHM_NAME_MAX];
} mp_shm_t;

/* Payload (after the header) of a mapped segment. */
static inline void *mp_shm_payload(const mp_shm_t *s)
{
	return (char *)s->base + MP_SHM_HDR_SIZE;
}

static inline size_t mp_shm_payload_size(const mp_shm_t *s)
{
	return s->size - MP_SHM_HDR_SIZE;
}

/*
 * Create and map a new segment of `size` bytes (header included, so size
 * must exceed MP_SHM_HDR_SIZE) named `name` ("/..." as for shm_open).
 * mode is masked with 0660; gid (gid_t)-1 leaves the group alone.  The
 * payload is zero-filled and the segment is *not* yet published.
 * Returns 0, or -EEXIST (name taken), -EINVAL (bad name or size),
 * -ENAMETOOLONG, -EPERM (chown to gid refused), -ENOSPC/-ENOMEM (no room),
 * -EACCES, or another -errno from shm_open/ftruncate/mmap.
 */
int mp_shm_create(mp_shm_t *s, const char *name, uint64_t magic,
		  uint32_t version, size_t size, mode_t mode, gid_t gid);

/* Mark a created segment ready for openers (release store). */
void mp_shm_publish(mp_shm_t *s);

/*
 * Open and map an existing segment read-write and validate its header.
 * expect_size 0 accepts any size the header and the object agree on.
 * Returns 0, or -ENOENT (no such object), -EACCES (permissions), -EBADMSG
 * (wrong magic, version, header size, or the header's size disagrees with
 * the object's or with expect_size), -EAGAIN (not published yet),
 * -EINVAL (bad name), or another -errno.
 */
int mp_shm_open(mp_shm_t *s, const char *name, uint64_t magic,
		uint32_t version, size_t expect_size);

/* Increment the generation counter (owner, after a repair or reset). */
uint32_t mp_shm_bump_generation(mp_shm_t *s);

/* Unmap; when the handle is the owner, unlink the name too.  Idempotent. */
void mp_shm_close(mp_shm_t *s);

/* Check a segment name: "/name", one leading slash and no other, at
 * least one more character.  0, -EINVAL, -ENAMETOOLONG. */
int mp_shm_check_name(const char *name);

/* Unlink a name (stale-object clean-up).  0 or -errno. */
int mp_shm_unlink(const char *name);

#endif
