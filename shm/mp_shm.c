/*
 * mp_shm — named POSIX shared-memory segments with a validated header
 * (see mp_shm.h).
 *
 * Invariants:
 * - A handle is either closed (base == NULL, owner == 0) or maps exactly
 *   `size` bytes, where size is the kernel's size of the object (fstat on
 *   open, the requested size on create).  Every entry point leaves a
 *   failed handle closed, so mp_shm_close() is always safe to call.
 * - The creator writes the whole header, then publishes with a release
 *   store of `ready`; an opener reads `ready` with an acquire load before
 *   it looks at any other header field, so a published header is seen
 *   complete.  Nothing in the header is trusted until checked against the
 *   fstat size.
 * - Objects are never world-accessible: the mode is (mode & 0660) | 0600,
 *   set with fchmod after creation so the process umask cannot change it
 *   (a umask of 022 would otherwise silently drop the group write bit that
 *   a shm group needs).  Owner read-write is always kept, because every
 *   open is O_RDWR and the creator's own processes must be able to open.
 *
 * Error mapping on open, in the order checked:
 *   size 0                          -EAGAIN (creator has not sized it yet)
 *   size <= header, or not a file   -EBADMSG
 *   expect_size given and differs   -EBADMSG
 *   ready != MP_SHM_READY           -EAGAIN (not published yet)
 *   magic, version, hdr_size, or total_size != fstat size   -EBADMSG
 *
 * Known limit: validation happens once, at open.  A peer with write access
 * to the object can ftruncate it afterwards, and a later access past the
 * new end raises SIGBUS in every process that maps it.  POSIX shm objects
 * cannot be sealed (only memfds can), so this is not prevented here; it
 * only matters for segments shared with less-trusted processes (a
 * channel's segment), where such a peer can only break that channel.
 * Space is reserved with posix_fallocate at create time, so running out of
 * room in /dev/shm is reported as -ENOSPC then, not as SIGBUS later.
 *
 * Also a known limit: the owner's close unlinks by name; if the name was
 * unlinked and re-created by someone else meanwhile, that object is the
 * one removed (the handle keeps no inode to compare against).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_shm.h"

/* The header fields are plain fixed-width integers (the layout is a
 * contract shared with other modules), so the atomic accesses below use
 * the GCC/Clang __atomic builtins, which act on ordinary objects. */

static void handle_reset(mp_shm_t *s)
{
	s->base = NULL;
	s->size = 0;
	s->owner = 0;
	memset(s->name, 0, sizeof(s->name));
}

int mp_shm_check_name(const char *name)
{
	size_t len;

	if (!name || name[0] != '/')
		return -EINVAL;
	len = strnlen(name, MP_SHM_NAME_MAX);
	if (len >= MP_SHM_NAME_MAX)
		return -ENAMETOOLONG;
	if (len < 2 || strchr(name + 1, '/'))
		return -EINVAL;
	return 0;
}

int mp_shm_create(mp_shm_t *s, const char *name, uint64_t magic,
		  uint32_t version, size_t size, mode_t mode, gid_t gid)
{
	struct mp_shm_hdr *h;
	mode_t m = (mode & 0660) | 0600;
	void *base;
	int fd, rc;

	handle_reset(s);
	rc = mp_shm_check_name(name);
	if (rc)
		return rc;
	if (size <= MP_SHM_HDR_SIZE || (uint64_t)size > (uint64_t)INT64_MAX)
		return -EINVAL;

	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, m);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, m) < 0)
		goto fail_errno;
	if (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0) {
		rc = errno == EPERM ? -EPERM : -errno;
		goto fail;
	}
	if (ftruncate(fd, (off_t)size) < 0)
		goto fail_errno;
	/* Reserve the pages now: tmpfs allocates lazily, and a full /dev/shm
	 * would otherwise surface as SIGBUS on first touch, in whichever
	 * process happened to touch the page. */
	rc = posix_fallocate(fd, 0, (off_t)size);
	if (rc && rc != EOPNOTSUPP && rc != EINVAL) {
		rc = -rc;
		goto fail;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		goto fail_errno;
	close(fd);

	/* A fresh O_EXCL object extended by ftruncate reads as zeroes, so the
	 * payload (and `ready`) are already zero: nothing to clear. */
	h = base;
	h->magic = magic;
	h->version = version;
	h->hdr_size = MP_SHM_HDR_SIZE;
	h->total_size = size;
	h->generation = 1;
	h->creator_pid = (uint32_t)getpid();

	s->base = base;
	s->size = size;
	s->owner = 1;
	memcpy(s->name, name, strlen(name) + 1);
	return 0;

fail_errno:
	rc = -errno;
fail:
	close(fd);
	shm_unlink(name);
	return rc;
}

void mp_shm_publish(mp_shm_t *s)
{
	struct mp_shm_hdr *h = s->base;

	/* Release: publishes the header fields and whatever payload the
	 * creator initialised before this call; pairs with the acquire load
	 * in mp_shm_open(). */
	__atomic_store_n(&h->ready, MP_SHM_READY, __ATOMIC_RELEASE);
}

int mp_shm_open(mp_shm_t *s, const char *name, uint64_t magic,
		uint32_t version, size_t expect_size)
{
	struct mp_shm_hdr hdr, *h;
	struct stat st;
	size_t size;
	void *base;
	int fd, rc;

	handle_reset(s);
	rc = mp_shm_check_name(name);
	if (rc)
		return rc;
	fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	/* The fstat size is the trusted copy: the kernel says how much can
	 * be mapped, whatever the header claims. */
	if (S_ISREG(st.st_mode) && st.st_size == 0)
		rc = -EAGAIN; /* between the creator's shm_open and ftruncate */
	else if (!S_ISREG(st.st_mode) || st.st_size <= MP_SHM_HDR_SIZE ||
		 (uint64_t)st.st_size > (uint64_t)SIZE_MAX)
		rc = -EBADMSG;
	else if (expect_size && (uint64_t)st.st_size != (uint64_t)expect_size)
		rc = -EBADMSG;
	if (rc) {
		close(fd);
		return rc;
	}
	size = (size_t)st.st_size;
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	rc = base == MAP_FAILED ? -errno : 0;
	close(fd);
	if (rc)
		return rc;

	h = base;
	/* Acquire: pairs with the release in mp_shm_publish(), so once ready
	 * reads MP_SHM_READY the rest of the header is complete. */
	if (__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE) != MP_SHM_READY) {
		rc = -EAGAIN;
		goto fail;
	}
	/* Check one private copy, so a peer rewriting the header cannot
	 * change a field between its check and its use. */
	memcpy(&hdr, h, sizeof(hdr));
	if (hdr.magic != magic || hdr.version != version ||
	    hdr.hdr_size != MP_SHM_HDR_SIZE ||
	    hdr.total_size != (uint64_t)size) {
		rc = -EBADMSG;
		goto fail;
	}
	s->base = base;
	s->size = size;
	s->owner = 0;
	memcpy(s->name, name, strlen(name) + 1);
	return 0;

fail:
	munmap(base, size);
	return rc;
}

uint32_t mp_shm_bump_generation(mp_shm_t *s)
{
	struct mp_shm_hdr *h = s->base;

	/* Release: a reader that sees the new generation (acquire) also sees
	 * the repair or reset the owner did before bumping it. */
	return __atomic_add_fetch(&h->generation, 1, __ATOMIC_ACQ_REL);
}

void mp_shm_close(mp_shm_t *s)
{
	if (s->base)
		munmap(s->base, s->size);
	if (s->owner && s->name[0] == '/')
		shm_unlink(s->name);
	handle_reset(s);
}

int mp_shm_unlink(const char *name)
{
	int rc = mp_shm_check_name(name);

	if (rc)
		return rc;
	return shm_unlink(name) < 0 ? -errno : 0;
}
