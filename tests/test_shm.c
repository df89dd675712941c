/*
 * test_shm — named segments (mp_shm) and the host token (mp_host).
 *
 * Segments: create/open/close round trip, who unlinks, every documented
 * open error (wrong magic, version, size, short object, lying header,
 * unpublished), permissions (never world-accessible, umask-proof), group
 * hand-over, a child seeing the parent's writes, generation bumps.
 * Host token: stable, shared across fork and between racing first callers,
 * a half-made or corrupt object replaced, different on another /dev/shm.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_host.h"
#include "mp_shm.h"
#include "mp_test.h"

#define MAGIC 0x5453455454534d50ULL
#define SEGV  3

static char nbuf[MP_SHM_NAME_MAX];

static const char *new_name(void)
{
	return mp_test_shm_name(nbuf, sizeof(nbuf), "shm");
}

static int exists(const char *name)
{
	int fd = shm_open(name, O_RDONLY, 0);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

static mode_t mode_of(const char *name)
{
	struct stat st;
	int fd = shm_open(name, O_RDONLY, 0);

	if (fd < 0)
		return (mode_t)-1;
	fstat(fd, &st);
	close(fd);
	return st.st_mode & 07777;
}

/* A raw object of `size` bytes whose first bytes are `hdr` (may be NULL). */
static void make_raw(const char *name, size_t size,
		     const struct mp_shm_hdr *hdr)
{
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(ftruncate(fd, (off_t)size) == 0);
	if (hdr && size >= sizeof(*hdr))
		CU_ASSERT_FATAL(pwrite(fd, hdr, sizeof(*hdr), 0) ==
				sizeof(*hdr));
	close(fd);
}

/* Open a raw object, unlink it, and return what the open said. */
static int open_raw(const char *name, size_t expect)
{
	mp_shm_t o;
	int rc = mp_shm_open(&o, name, MAGIC, SEGV, expect);

	if (rc == 0 && (o.base == NULL || o.owner))
		rc = -1000;
	if (rc != 0 && o.base != NULL)
		rc = -1001;
	mp_shm_close(&o);
	return rc;
}

static struct mp_shm_hdr good_hdr(size_t size)
{
	struct mp_shm_hdr h;

	memset(&h, 0, sizeof(h));
	h.magic = MAGIC;
	h.version = SEGV;
	h.hdr_size = MP_SHM_HDR_SIZE;
	h.total_size = size;
	h.generation = 1;
	h.ready = MP_SHM_READY;
	return h;
}

/* Run fn in a child as user/group nobody; returns its exit code. */
static int as_nobody(int (*fn)(const char *), const char *name)
{
	pid_t pid = mp_test_fork();
	int st;

	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(90);
		_exit(fn(name));
	}
	st = mp_test_wait(pid, 10000);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_round_trip(void)
{
	mp_shm_t c, o;
	const char *name = new_name();
	struct mp_shm_hdr *h;
	unsigned char *p;
	size_t i, zero = 1;

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 8192, 0600, (gid_t)-1), 0);
	CU_ASSERT_PTR_NOT_NULL(c.base);
	CU_ASSERT_EQUAL(c.size, 8192);
	CU_ASSERT_EQUAL(c.owner, 1);
	CU_ASSERT_STRING_EQUAL(c.name, name);
	CU_ASSERT_EQUAL(mp_shm_payload_size(&c), 8192 - MP_SHM_HDR_SIZE);
	h = c.base;
	CU_ASSERT_EQUAL(h->magic, MAGIC);
	CU_ASSERT_EQUAL(h->version, SEGV);
	CU_ASSERT_EQUAL(h->hdr_size, MP_SHM_HDR_SIZE);
	CU_ASSERT_EQUAL(h->total_size, 8192);
	CU_ASSERT_EQUAL(h->creator_pid, (uint32_t)getpid());
	CU_ASSERT_EQUAL(h->ready, 0);
	p = mp_shm_payload(&c);
	for (i = 0; i < mp_shm_payload_size(&c); i++)
		zero &= p[i] == 0;
	CU_ASSERT(zero);
	memcpy(p, "hello", 6);
	mp_shm_publish(&c);
	CU_ASSERT_EQUAL(h->ready, MP_SHM_READY);

	CU_ASSERT_EQUAL_FATAL(mp_shm_open(&o, name, MAGIC, SEGV, 0), 0);
	CU_ASSERT_EQUAL(o.size, 8192);
	CU_ASSERT_EQUAL(o.owner, 0);
	CU_ASSERT_STRING_EQUAL((char *)mp_shm_payload(&o), "hello");
	/* Two mappings of one object. */
	memcpy(mp_shm_payload(&o), "world", 6);
	CU_ASSERT_STRING_EQUAL((char *)p, "world");
	mp_shm_close(&o);
	mp_shm_close(&c);
	CU_ASSERT_PTR_NULL(c.base);
}

static void test_close_unlinks_owner_only(void)
{
	mp_shm_t c, o;
	const char *name = new_name();

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0600, (gid_t)-1), 0);
	mp_shm_publish(&c);
	CU_ASSERT_EQUAL_FATAL(mp_shm_open(&o, name, MAGIC, SEGV, 4096), 0);
	mp_shm_close(&o);
	CU_ASSERT(exists(name)); /* an opener's close keeps the name */
	mp_shm_close(&o);	 /* idempotent */
	CU_ASSERT(exists(name));
	mp_shm_close(&c);
	CU_ASSERT(!exists(name)); /* the owner's close removes it */
	mp_shm_close(&c);
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC, SEGV, 0), -ENOENT);
	CU_ASSERT_PTR_NULL(o.base);
	mp_shm_close(&o); /* safe after a failed open */
}

static void test_open_errors(void)
{
	mp_shm_t c, o;
	const char *name = new_name();

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0600, (gid_t)-1), 0);
	/* Not published yet. */
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC, SEGV, 0), -EAGAIN);
	CU_ASSERT_PTR_NULL(o.base);
	mp_shm_publish(&c);
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC + 1, SEGV, 0), -EBADMSG);
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC, SEGV + 1, 0), -EBADMSG);
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC, SEGV, 8192), -EBADMSG);
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC, SEGV, 4095), -EBADMSG);
	CU_ASSERT_PTR_NULL(o.base);
	CU_ASSERT_EQUAL(mp_shm_open(&o, name, MAGIC, SEGV, 4096), 0);
	mp_shm_close(&o);
	mp_shm_close(&c);

	CU_ASSERT_EQUAL(
		mp_shm_open(&o, "/messip-test-no-such-object", MAGIC, SEGV, 0),
		-ENOENT);
	CU_ASSERT_EQUAL(mp_shm_open(&o, "noslash", MAGIC, SEGV, 0), -EINVAL);
	CU_ASSERT_EQUAL(mp_shm_open(&o, "/", MAGIC, SEGV, 0), -EINVAL);
	CU_ASSERT_EQUAL(mp_shm_open(&o, "/a/b", MAGIC, SEGV, 0), -EINVAL);
	CU_ASSERT_EQUAL(mp_shm_open(&o, NULL, MAGIC, SEGV, 0), -EINVAL);
}

static void test_short_and_lying_objects(void)
{
	struct mp_shm_hdr h;
	const char *name;

	/* Shorter than the header. */
	name = new_name();
	make_raw(name, 32, NULL);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EBADMSG);
	shm_unlink(name);
	/* Exactly a header, no payload. */
	name = new_name();
	h = good_hdr(MP_SHM_HDR_SIZE);
	make_raw(name, MP_SHM_HDR_SIZE, &h);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EBADMSG);
	shm_unlink(name);
	/* Empty: a creator between shm_open and ftruncate. */
	name = new_name();
	make_raw(name, 0, NULL);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EAGAIN);
	shm_unlink(name);
	/* A correct hand-made header is accepted (the crafting works)... */
	name = new_name();
	h = good_hdr(4096);
	make_raw(name, 4096, &h);
	CU_ASSERT_EQUAL(open_raw(name, 0), 0);
	CU_ASSERT_EQUAL(open_raw(name, 4096), 0);
	shm_unlink(name);
	/* ...but not one claiming more than the object holds... */
	name = new_name();
	h = good_hdr(1 << 20);
	make_raw(name, 4096, &h);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EBADMSG);
	CU_ASSERT_EQUAL(open_raw(name, 1 << 20), -EBADMSG);
	shm_unlink(name);
	/* ...or less... */
	name = new_name();
	h = good_hdr(128);
	make_raw(name, 4096, &h);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EBADMSG);
	shm_unlink(name);
	/* ...or a different header size. */
	name = new_name();
	h = good_hdr(4096);
	h.hdr_size = 32;
	make_raw(name, 4096, &h);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EBADMSG);
	shm_unlink(name);
	/* A ready word that is not MP_SHM_READY is "not published". */
	name = new_name();
	h = good_hdr(4096);
	h.ready = 1;
	make_raw(name, 4096, &h);
	CU_ASSERT_EQUAL(open_raw(name, 0), -EAGAIN);
	shm_unlink(name);
}

static void test_create_errors(void)
{
	mp_shm_t c, d;
	const char *name = new_name();
	char longname[MP_SHM_NAME_MAX + 8];

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0600, (gid_t)-1), 0);
	CU_ASSERT_EQUAL(
		mp_shm_create(&d, name, MAGIC, SEGV, 4096, 0600, (gid_t)-1),
		-EEXIST);
	CU_ASSERT_PTR_NULL(d.base);
	mp_shm_close(&d); /* a failed create owns nothing: name survives */
	CU_ASSERT(exists(name));
	mp_shm_close(&c);

	name = new_name();
	CU_ASSERT_EQUAL(mp_shm_create(&d, name, MAGIC, SEGV, MP_SHM_HDR_SIZE,
				      0600, (gid_t)-1),
			-EINVAL);
	CU_ASSERT_EQUAL(
		mp_shm_create(&d, name, MAGIC, SEGV, 0, 0600, (gid_t)-1),
		-EINVAL);
	CU_ASSERT(!exists(name));
	CU_ASSERT_EQUAL(
		mp_shm_create(&d, "bad", MAGIC, SEGV, 4096, 0600, (gid_t)-1),
		-EINVAL);
	memset(longname, 'x', sizeof(longname));
	longname[0] = '/';
	longname[MP_SHM_NAME_MAX] = '\0'; /* 96 chars: one too many */
	CU_ASSERT_EQUAL(
		mp_shm_create(&d, longname, MAGIC, SEGV, 4096, 0600, (gid_t)-1),
		-ENAMETOOLONG);
	CU_ASSERT_EQUAL(mp_shm_unlink(longname), -ENAMETOOLONG);
	CU_ASSERT_EQUAL(mp_shm_unlink("/messip-test-no-such-object"), -ENOENT);
}

static void test_permissions(void)
{
	static const struct {
		mode_t ask, want;
	} cases[] = {
		{0600, 0600}, {0660, 0660}, {0666, 0660},  {0777, 0660},
		{0644, 0640}, {0, 0600},    {04777, 0660},
	};
	mode_t old = umask(077); /* must not cut the group bits */

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		mp_shm_t c;
		const char *name = new_name();
		mode_t m;

		CU_ASSERT_EQUAL_FATAL(mp_shm_create(&c, name, MAGIC, SEGV, 4096,
						    cases[i].ask, (gid_t)-1),
				      0);
		m = mode_of(name);
		CU_ASSERT_EQUAL(m, cases[i].want);
		CU_ASSERT_EQUAL(m & 0007, 0);
		mp_shm_close(&c);
	}
	umask(old);
}

static int child_open_expect_eacces(const char *name)
{
	mp_shm_t o;
	int rc = mp_shm_open(&o, name, MAGIC, SEGV, 0);

	return rc == -EACCES ? 0 : 1;
}

static int child_create_chown_root(const char *name)
{
	mp_shm_t c;
	int rc = mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0660, 0);

	if (rc != -EPERM)
		return 1;
	/* A failed create leaves no object behind. */
	return exists(name) ? 2 : 0;
}

static void test_group_and_access(void)
{
	mp_shm_t c;
	const char *name = new_name();
	gid_t g = getegid() == 0 ? 65534 : getegid();
	struct stat st;
	int fd;

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0660, g), 0);
	fd = shm_open(name, O_RDONLY, 0);
	CU_ASSERT_FATAL(fd >= 0);
	fstat(fd, &st);
	close(fd);
	CU_ASSERT_EQUAL(st.st_gid, g);
	mp_shm_close(&c);

	/* Another user cannot open an owner-only segment. */
	name = new_name();
	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0600, (gid_t)-1), 0);
	mp_shm_publish(&c);
	CU_ASSERT_EQUAL(as_nobody(child_open_expect_eacces, name), 0);
	mp_shm_close(&c);

	/* A group the creator is not in is refused, and cleaned up. */
	if (geteuid() == 0 || getegid() != 0)
		CU_ASSERT_EQUAL(as_nobody(child_create_chown_root, new_name()),
				0);
	shm_unlink(nbuf); /* only if the test failed */
}

static void test_child_sees_writes(void)
{
	mp_shm_t c;
	const char *name = new_name();
	uint32_t *p;
	pid_t pid;
	int st;

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 1 << 16, 0600, (gid_t)-1),
		0);
	p = mp_shm_payload(&c);
	for (uint32_t i = 0; i < 1000; i++)
		p[i] = i * 7 + 1;
	mp_shm_publish(&c);
	pid = mp_test_fork();
	if (pid == 0) {
		mp_shm_t o;
		uint32_t *q;

		if (mp_shm_open(&o, name, MAGIC, SEGV, 1 << 16))
			_exit(1);
		q = mp_shm_payload(&o);
		for (uint32_t i = 0; i < 1000; i++)
			if (q[i] != i * 7 + 1)
				_exit(2);
		q[2000] = 0xfeedbeef;
		mp_shm_bump_generation(&o);
		mp_shm_close(&o);
		_exit(exists(name) ? 0 : 3);
	}
	st = mp_test_wait(pid, 10000);
	CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT_EQUAL(p[2000], 0xfeedbeef);
	CU_ASSERT_EQUAL(((struct mp_shm_hdr *)c.base)->generation, 2);
	mp_shm_close(&c);
}

static void test_generation(void)
{
	mp_shm_t c, o;
	const char *name = new_name();
	uint32_t g0;

	CU_ASSERT_EQUAL_FATAL(
		mp_shm_create(&c, name, MAGIC, SEGV, 4096, 0600, (gid_t)-1), 0);
	mp_shm_publish(&c);
	CU_ASSERT_EQUAL_FATAL(mp_shm_open(&o, name, MAGIC, SEGV, 0), 0);
	g0 = ((struct mp_shm_hdr *)o.base)->generation;
	CU_ASSERT_EQUAL(mp_shm_bump_generation(&c), g0 + 1);
	CU_ASSERT_EQUAL(mp_shm_bump_generation(&c), g0 + 2);
	CU_ASSERT_EQUAL(((struct mp_shm_hdr *)o.base)->generation, g0 + 2);
	mp_shm_close(&o);
	mp_shm_close(&c);
}

/* ---- host token ---- */

static uint64_t token_in_child(const char *name, int *ok)
{
	uint64_t tok = 0;
	int fds[2];
	pid_t pid;
	int st;

	*ok = 0;
	if (pipe(fds))
		return 0;
	pid = mp_test_fork();
	if (pid == 0) {
		uint64_t t = 0;
		int rc = name ? mp_host_token_named(name, &t)
			      : mp_host_token(&t);

		close(fds[0]);
		if (write(fds[1], &t, sizeof(t)) != sizeof(t))
			_exit(2);
		_exit(rc ? 1 : 0);
	}
	close(fds[1]);
	*ok = read(fds[0], &tok, sizeof(tok)) == sizeof(tok);
	close(fds[0]);
	st = mp_test_wait(pid, 10000);
	*ok = *ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	return tok;
}

static void test_host_token_stable(void)
{
	uint64_t a = 0, b = 0, c;
	int ok;

	CU_ASSERT_EQUAL_FATAL(mp_host_token(&a), 0);
	CU_ASSERT_EQUAL_FATAL(mp_host_token(&b), 0);
	CU_ASSERT_NOT_EQUAL(a, 0);
	CU_ASSERT_EQUAL(a, b);
	c = token_in_child(NULL, &ok);
	CU_ASSERT(ok);
	CU_ASSERT_EQUAL(c, a);
	CU_ASSERT_EQUAL(mode_of(MP_HOST_TOKEN_NAME), 0644);
}

static void test_host_token_race(void)
{
	enum { N = 8 };
	const char *name = mp_test_shm_name(nbuf, sizeof(nbuf), "host");
	uint64_t first = 0, mine = 0;
	int fds[2], st[N];
	pid_t pids[N];
	int same = 1, got = 0;

	CU_ASSERT_FATAL(pipe(fds) == 0);
	for (int i = 0; i < N; i++) {
		pids[i] = mp_test_fork();
		if (pids[i] == 0) {
			uint64_t t = 0;
			int rc = mp_host_token_named(name, &t);

			if (write(fds[1], &t, sizeof(t)) != sizeof(t))
				_exit(2);
			_exit(rc ? 1 : 0);
		}
	}
	close(fds[1]);
	for (int i = 0; i < N; i++) {
		uint64_t t;

		if (read(fds[0], &t, sizeof(t)) != sizeof(t))
			break;
		if (got++ == 0)
			first = t;
		same &= t == first;
	}
	close(fds[0]);
	for (int i = 0; i < N; i++) {
		st[i] = mp_test_wait(pids[i], 10000);
		CU_ASSERT(WIFEXITED(st[i]) && WEXITSTATUS(st[i]) == 0);
	}
	CU_ASSERT_EQUAL(got, N);
	CU_ASSERT(same);
	CU_ASSERT_NOT_EQUAL(first, 0);
	CU_ASSERT_EQUAL(mp_host_token_named(name, &mine), 0);
	CU_ASSERT_EQUAL(mine, first);
	CU_ASSERT_EQUAL(mode_of(name), 0644);
	shm_unlink(name);
	/* A different name is a different "host". */
	name = new_name();
	CU_ASSERT_EQUAL(mp_host_token_named(name, &mine), 0);
	CU_ASSERT_NOT_EQUAL(mine, first);
	shm_unlink(name);
	CU_ASSERT_EQUAL(mp_host_token_named("nope", &mine), -EINVAL);
}

static int child_token_expect_eacces(const char *name)
{
	uint64_t t;

	return mp_host_token_named(name, &t) == -EACCES ? 0 : 1;
}

static void test_host_token_stale(void)
{
	char half[MP_SHM_NAME_MAX], bad[MP_SHM_NAME_MAX];
	uint64_t junk[3] = {1, 2, 3}, t1 = 0, t2 = 0;
	int fd, ok1, ok2;

	/* A creator that died after O_EXCL: mode 0, no content. */
	mp_test_shm_name(half, sizeof(half), "host");
	fd = shm_open(half, O_RDWR | O_CREAT | O_EXCL, 0);
	CU_ASSERT_FATAL(fd >= 0);
	close(fd);
	/* Readable but holding no valid token. */
	mp_test_shm_name(bad, sizeof(bad), "host");
	fd = shm_open(bad, O_RDWR | O_CREAT | O_EXCL, 0644);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(write(fd, junk, sizeof(junk)) == sizeof(junk));
	fchmod(fd, 0644);
	close(fd);

	/* Someone else's half-made object cannot be replaced by us. */
	if (geteuid() == 0)
		CU_ASSERT_EQUAL(as_nobody(child_token_expect_eacces, half), 0);

	/* Ours, unchanged for 2 s: replaced.  Both in parallel. */
	t1 = token_in_child(half, &ok1);
	t2 = token_in_child(bad, &ok2);
	CU_ASSERT(ok1 && ok2);
	CU_ASSERT_NOT_EQUAL(t1, 0);
	CU_ASSERT_NOT_EQUAL(t2, 0);
	CU_ASSERT_EQUAL(mode_of(half), 0644);
	CU_ASSERT_EQUAL(mp_host_token_named(half, &junk[0]), 0);
	CU_ASSERT_EQUAL(junk[0], t1);
	shm_unlink(half);
	shm_unlink(bad);
}

/* A child with its own /dev/shm is "another host". */
static void test_host_token_other_shm(void)
{
	uint64_t here = 0, there = 0;
	int fds[2], st;
	pid_t pid;

	CU_ASSERT_EQUAL_FATAL(mp_host_token(&here), 0);
	CU_ASSERT_FATAL(pipe(fds) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		uint64_t t = 0;
		int flags = CLONE_NEWNS | (geteuid() ? CLONE_NEWUSER : 0);

		close(fds[0]);
		if (unshare(flags) ||
		    mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) ||
		    mount("none", "/dev/shm", "tmpfs", 0, NULL))
			_exit(77);
		if (mp_host_token(&t))
			_exit(1);
		if (write(fds[1], &t, sizeof(t)) != sizeof(t))
			_exit(2);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], &there, sizeof(there)) != sizeof(there))
		there = 0;
	close(fds[0]);
	st = mp_test_wait(pid, 10000);
	CU_ASSERT_FATAL(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77) {
		fprintf(stderr, "\n  (skipped: cannot mount a private "
				"/dev/shm here)\n");
		return;
	}
	CU_ASSERT_EQUAL(WEXITSTATUS(st), 0);
	CU_ASSERT_NOT_EQUAL(there, 0);
	CU_ASSERT_NOT_EQUAL(there, here);
}

static const struct mp_test_case tests[] = {
	{"create, open, close round trip", test_round_trip},
	{"owner close unlinks, opener close does not",
	 test_close_unlinks_owner_only},
	{"open: wrong magic/version/size, unpublished, missing",
	 test_open_errors},
	{"open: object shorter than header or header lying",
	 test_short_and_lying_objects},
	{"create: name taken, bad size, bad or long name", test_create_errors},
	{"permissions never world-accessible, umask-proof", test_permissions},
	{"group hand-over, other user refused", test_group_and_access},
	{"child opens and sees parent's writes", test_child_sees_writes},
	{"generation bump", test_generation},
	{"host token stable and same across fork", test_host_token_stable},
	{"host token: racing first callers agree", test_host_token_race},
	{"host token: half-made or corrupt object replaced",
	 test_host_token_stale},
	{"host token: separate /dev/shm differs", test_host_token_other_shm},
	MP_TEST_END};

int main(void)
{
	mp_test_init("test_shm", 60);
	return mp_test_main("shm", tests);
}
