/*
 * mp_host — the host token (see mp_host.h).
 *
 * The object holds 24 bytes, {magic, token, check}, in host byte order
 * (only processes of this host ever read it).  check is a mix of token and
 * magic, so a half-written or foreign object is recognised as such.
 *
 * Creation protocol, safe against racing first callers and against a
 * creator that dies half-way:
 *   1. shm_open(O_CREAT | O_EXCL, mode 0): exactly one racer wins; the
 *      others get EEXIST and go back to reading.
 *   2. pwrite the whole content while the mode is still 0, so no
 *      unprivileged reader can open it and see a partial value.
 *   3. fchmod 0644: publishes it.
 * Readers therefore see ENOENT (create it), EACCES (mode still 0: being
 * created), or an object whose content they validate (root ignores the
 * mode, hence the check word).  A reader that keeps seeing EACCES or bad
 * content for STALE_NS gives up waiting; if the object has not changed for
 * that long and is ours to remove (our uid, or we are root), it is taken
 * as the leftover of a dead creator, unlinked, and created afresh.
 *
 * The stale check stats the object through its /dev/shm path: glibc keeps
 * POSIX shm objects there, and shm_open offers no way to stat an object one
 * cannot open.  Between that stat and the unlink another process could
 * replace the object; the loser of that race returns a token that is
 * replaced a moment later, and since nothing caches the token its next
 * call reads the right one.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mp_host.h"
#include "mp_shm.h"
#include "mp_time.h"

#define HOST_MAGIC 0x4e454b4f5448504dULL /* "MPHTOKEN" */
#define STALE_NS   2000000000LL
#define SHM_DIR    "/dev/shm"

struct host_tok {
	uint64_t magic;
	uint64_t token;
	uint64_t check;
};
_Static_assert(sizeof(struct host_tok) == 24, "host token layout");

/* splitmix64's finaliser: every input bit affects every output bit. */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t tok_check(uint64_t token)
{
	return mix64(token ^ HOST_MAGIC);
}


/* 0 and *token; -ENOENT; -EACCES; -EBADMSG (not a valid token, perhaps
 * not yet); or another -errno. */
static int read_tok(const char *name, uint64_t *token)
{
	struct host_tok t;
	struct stat st;
	ssize_t n;
	int fd, rc = 0;

	fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
	} else if (!S_ISREG(st.st_mode) || st.st_size != sizeof(t)) {
		rc = -EBADMSG;
	} else {
		/* pread, not mmap: a peer truncating the object cannot turn
		 * this read into SIGBUS. */
		n = pread(fd, &t, sizeof(t), 0);
		if (n < 0)
			rc = -errno;
		else if (n != sizeof(t) || t.magic != HOST_MAGIC ||
			 t.token == 0 || t.check != tok_check(t.token))
			rc = -EBADMSG;
	}
	close(fd);
	if (!rc)
		*token = t.token;
	return rc;
}

static int random_token(uint64_t *token)
{
	uint64_t v = 0;

	while (v == 0) {
		ssize_t n = getrandom(&v, sizeof(v), 0);

		if (n < 0 && errno != EINTR)
			return -errno;
		if (n != sizeof(v))
			v = 0;
	}
	*token = v;
	return 0;
}

/* 0 and *token (we created it), -EEXIST (someone else did), or -errno. */
static int create_tok(const char *name, uint64_t *token)
{
	struct host_tok t;
	ssize_t n;
	int fd, rc;

	rc = random_token(&t.token);
	if (rc)
		return rc;
	t.magic = HOST_MAGIC;
	t.check = tok_check(t.token);

	/* Mode 0 while the content is written: see the banner. */
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = pwrite(fd, &t, sizeof(t), 0);
	if (n != sizeof(t)) {
		rc = n < 0 ? -errno : -ENOSPC;
		goto fail;
	}
	if (fchmod(fd, 0644) < 0) {
		rc = -errno;
		goto fail;
	}
	close(fd);
	*token = t.token;
	return 0;
fail:
	close(fd);
	shm_unlink(name);
	return rc;
}

/* The object has been unusable for STALE_NS.  Unlink it if it is ours to
 * remove and has not changed for that long.  1 when the caller should try
 * again, 0 when it should give up, -EAGAIN when it changed recently (some
 * process is still at work on it). */
static int replace_stale(const char *name)
{
	char path[sizeof(SHM_DIR) + MP_SHM_NAME_MAX];
	struct timespec now;
	struct stat st;
	int64_t age;

	snprintf(path, sizeof(path), "%s%s", SHM_DIR, name);
	if (stat(path, &st) < 0)
		return errno == ENOENT;
	if (st.st_uid != geteuid() && geteuid() != 0)
		return 0;
	clock_gettime(CLOCK_REALTIME, &now);
	age = ((int64_t)now.tv_sec - st.st_ctim.tv_sec) * 1000000000LL +
	      (now.tv_nsec - st.st_ctim.tv_nsec);
	if (age < STALE_NS)
		return -EAGAIN;
	return shm_unlink(name) == 0 || errno == ENOENT;
}

int mp_host_token_named(const char *name, uint64_t *token)
{
	int64_t start = mp_time_now_ns();
	int64_t deadline = start + STALE_NS;
	long pause_ns = 50000;
	int replaced = 0;
	int rc, r;

	rc = mp_shm_check_name(name);
	if (rc)
		return rc;
	for (;;) {
		/* Bound even a pathological create/unlink churn by others. */
		if (mp_time_now_ns() - start > 3 * STALE_NS)
			return -EAGAIN;
		rc = read_tok(name, token);
		if (rc == 0)
			return 0;
		if (rc == -ENOENT) {
			rc = create_tok(name, token);
			if (rc != -EEXIST)
				return rc;
			continue; /* lost the race: read the winner's */
		}
		if (rc != -EACCES && rc != -EBADMSG)
			return rc;
		/* Being created by someone else, or left half-made. */
		if (mp_time_now_ns() >= deadline) {
			if (replaced)
				return rc;
			r = replace_stale(name);
			if (r <= 0)
				return r < 0 ? r : rc;
			replaced = 1;
			deadline = mp_time_now_ns() + STALE_NS;
			continue;
		}
		nanosleep(&(struct timespec){ 0, pause_ns }, NULL);
		if (pause_ns < 10000000)
			pause_ns *= 2;
	}
}

int mp_host_token(uint64_t *token)
{
	return mp_host_token_named(MP_HOST_TOKEN_NAME, token);
}
