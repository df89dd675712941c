/*
 * test_mgr_config — the manager's configuration: the table's defaults, a
 * file with every key, each kind of error reported as file:line, reload
 * semantics (reloadable vs not, export/import with bounds), and the
 * binary's -t / -c / -p / -w handling with its exit codes.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mgr_config.h"
#include "mgr_log.h"
#include "mp_test.h"

static char path[256];

static const char *write_file(const char *text)
{
	FILE *f;

	snprintf(path, sizeof(path), "/tmp/messip-test-%ld-conf",
		 (long)getpid());
	f = fopen(path, "w");
	CU_ASSERT_FATAL(f != NULL);
	fputs(text, f);
	fclose(f);
	return path;
}

static void test_defaults(void)
{
	struct mgr_config c;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	mgr_config_defaults(&c);
	CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:9200");
	CU_ASSERT_STRING_EQUAL(c.status_listen, "127.0.0.1:9201");
	CU_ASSERT(c.max_message_size == 65536);
	CU_ASSERT(c.resume_grace_ms == 5000);
	CU_ASSERT(c.handshake_timeout_ms == 5000);
	CU_ASSERT(c.shm_mode == 0600);
	CU_ASSERT(c.shm_group == -1);
	CU_ASSERT(c.allow_remote == 0);
	CU_ASSERT(c.log_level == MGR_LOG_INFO);
	CU_ASSERT(c.log_target == MGR_LOG_STDERR);
	CU_ASSERT(c.workers ==
		  (ncpu < 1 ? 1 : ncpu > MGR_MAX_WORKERS ? MGR_MAX_WORKERS
							 : ncpu));
	CU_ASSERT(c.default_buffered > 0);
	CU_ASSERT(c.ring_memory > 0);
}

static void test_every_key(void)
{
	struct mgr_config c;
	char err[MGR_ERR_MAX];
	int rc;

	write_file("# a comment\n"
		   "\n"
		   "   listen   127.0.0.2:7000   # trailing comment\n"
		   "status_listen off\n"
		   "workers 3\n"
		   "max_channels 100\n"
		   "max_links 2000\n"
		   "max_message_size 1K\n"
		   "ring_memory 2M\n"
		   "shm_group 0\n"
		   "shm_mode 0660\n"
		   "allow_remote no\n"
		   "max_connections 77\n"
		   "default_buffered 9\n"
		   "handshake_timeout_ms 1500\n"
		   "resume_grace_ms 0\n"
		   "write_timeout_ms 700\n"
		   "log_level debug\n"
		   "log_target syslog\n");
	rc = mgr_config_load(&c, path, err, sizeof(err));
	if (rc)
		fprintf(stderr, "%s\n", err);
	CU_ASSERT_FATAL(rc == 0);
	CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.2:7000");
	CU_ASSERT_STRING_EQUAL(c.status_listen, "off");
	CU_ASSERT(c.workers == 3);
	CU_ASSERT(c.max_channels == 100);
	CU_ASSERT(c.max_links == 2000);
	CU_ASSERT(c.max_message_size == 1024);
	CU_ASSERT(c.ring_memory == 2 * 1024 * 1024);
	CU_ASSERT(c.shm_group == 0);
	CU_ASSERT(c.shm_mode == 0660);
	CU_ASSERT(c.max_connections == 77);
	CU_ASSERT(c.default_buffered == 9);
	CU_ASSERT(c.handshake_timeout_ms == 1500);
	CU_ASSERT(c.resume_grace_ms == 0);
	CU_ASSERT(c.write_timeout_ms == 700);
	CU_ASSERT(c.log_level == MGR_LOG_DEBUG);
	CU_ASSERT(c.log_target == MGR_LOG_SYSLOG);
	unlink(path);
}

/* Each bad file: the error names path:line and the key. */
static void test_errors(void)
{
	static const struct {
		const char *text;
		int line;
		const char *key, *reason;
	} bad[] = {
		{ "workers 2\nbogus 1\n", 2, "bogus", "unknown key" },
		{ "workers two\n", 1, "workers", "expected" },
		{ "workers 0\n", 1, "workers", "out of range" },
		{ "workers 65\n", 1, "workers", "out of range" },
		{ "\n\nmax_message_size 65537\n", 3, "max_message_size",
		  "out of range" },
		{ "max_channels\n", 1, "max_channels", "expected 'key value'" },
		{ "max_channels 5 6\n", 1, "max_channels",
		  "expected 'key value'" },
		{ "allow_remote maybe\n", 1, "allow_remote", "yes or no" },
		{ "shm_mode 0666\n", 1, "shm_mode", "never world" },
		{ "shm_mode 0400\n", 1, "shm_mode", "owner rw" },
		{ "shm_mode 9\n", 1, "shm_mode", "octal" },
		{ "shm_group no-such-group-xyz\n", 1, "shm_group",
		  "no such group" },
		{ "listen 127.0.0.1\n", 1, "listen", "host:port" },
		{ "listen 127.0.0.1:0\n", 1, "listen", "host:port" },
		{ "listen 127.0.0.1:70000\n", 1, "listen", "host:port" },
		{ "listen example.com:9200\n", 1, "listen", "host:port" },
		{ "status_listen nowhere\n", 1, "status_listen", "host:port" },
		{ "log_level loud\n", 1, "log_level", "error, warning" },
		{ "log_target file\n", 1, "log_target", "stderr or syslog" },
		{ "ring_memory 1K\n", 1, "ring_memory", "out of range" },
		{ "ring_memory 12Q\n", 1, "ring_memory", "size" },
		{ "resume_grace_ms -1\n", 1, "resume_grace_ms",
		  "out of range" },
		{ "workers 1\nlisten 0.0.0.0:9200\n", 2, "listen",
		  "allow_remote yes" },
	};
	struct mgr_config c, before;

	mgr_config_defaults(&c);
	c.workers = 7;
	before = c;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char err[MGR_ERR_MAX], want[300];
		int rc;

		write_file(bad[i].text);
		rc = mgr_config_load(&c, path, err, sizeof(err));
		snprintf(want, sizeof(want), "%s:%d: %s: ", path, bad[i].line,
			 bad[i].key);
		if (rc != -EINVAL || strncmp(err, want, strlen(want)) != 0 ||
		    !strstr(err, bad[i].reason))
			fprintf(stderr, "case %zu: rc %d, err '%s'\n", i, rc,
				err);
		CU_ASSERT(rc == -EINVAL);
		CU_ASSERT(strncmp(err, want, strlen(want)) == 0);
		CU_ASSERT(strstr(err, bad[i].reason) != NULL);
		/* A failed load leaves the struct alone. */
		CU_ASSERT(memcmp(&c, &before, sizeof(c)) == 0);
	}
	/* Remote listening is fine once allowed, and the message says why
	 * it is needed. */
	{
		char err[MGR_ERR_MAX];

		write_file("listen 0.0.0.0:9200\n");
		CU_ASSERT(mgr_config_load(&c, path, err, sizeof(err)) ==
			  -EINVAL);
		CU_ASSERT(strstr(err, "authentication") != NULL);
		write_file("listen 0.0.0.0:9200\nallow_remote yes\n");
		CU_ASSERT(mgr_config_load(&c, path, err, sizeof(err)) == 0);
	}
	unlink(path);
	{
		char err[MGR_ERR_MAX];

		CU_ASSERT(mgr_config_load(&c, "/nonexistent/messip.conf", err,
					  sizeof(err)) == -ENOENT);
		CU_ASSERT(strstr(err, "/nonexistent/messip.conf") != NULL);
	}
}

static void test_reload_semantics(void)
{
	struct mgr_config cur, fresh;
	int64_t vals[MGR_CFG_RELOADABLE];
	char changed[256];
	int n;

	mgr_config_defaults(&cur);
	fresh = cur;
	fresh.default_buffered = 11;
	fresh.resume_grace_ms = 1;
	fresh.workers = cur.workers + 1;
	snprintf(fresh.listen, sizeof(fresh.listen), "127.0.0.1:1");
	n = mgr_config_apply_reload(&cur, &fresh, changed, sizeof(changed));
	CU_ASSERT(n == 2);
	CU_ASSERT(cur.default_buffered == 11);
	CU_ASSERT(cur.resume_grace_ms == 1);
	CU_ASSERT(cur.workers != fresh.workers);
	CU_ASSERT_STRING_EQUAL(cur.listen, "127.0.0.1:9200");
	CU_ASSERT(strstr(changed, "workers") != NULL);
	CU_ASSERT(strstr(changed, "listen") != NULL);

	/* Export / import round trip; out-of-range values are ignored. */
	mgr_config_export(&cur, vals);
	mgr_config_defaults(&fresh);
	CU_ASSERT(mgr_config_import(&fresh, vals) == 0);
	CU_ASSERT(fresh.default_buffered == 11);
	CU_ASSERT(fresh.resume_grace_ms == 1);
	for (int i = 0; i < MGR_CFG_RELOADABLE; i++)
		vals[i] = -999999;
	CU_ASSERT(mgr_config_import(&fresh, vals) == MGR_CFG_RELOADABLE);
	CU_ASSERT(fresh.default_buffered == 11);
}

/* Run the binary with args; returns the exit status, stderr in err. */
static int run(char *const argv[], char *err, size_t errlen)
{
	const char *bin = getenv("MP_MGR_BIN");
	int pfd[2], status = -1;
	size_t used = 0;
	ssize_t n;
	pid_t pid;

	if (!bin)
		bin = "./mgrd/messip-mgr";
	CU_ASSERT_FATAL(pipe(pfd) == 0);
	pid = mp_test_fork();
	if (pid == 0) {
		dup2(pfd[1], 2);
		dup2(pfd[1], 1);
		execv(bin, argv);
		_exit(127);
	}
	close(pfd[1]);
	while (used + 1 < errlen &&
	       (n = read(pfd[0], err + used, errlen - used - 1)) > 0)
		used += (size_t)n;
	err[used] = 0;
	close(pfd[0]);
	status = mp_test_wait(pid, 5000);
	if (status == -1)
		mp_test_kill(pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_binary_check(void)
{
	char err[2048], want[300];
	char *good[] = { "messip-mgr", "-t", "-c", path, NULL };
	char *missing[] = { "messip-mgr", "-t", "-c", "/nonexistent.conf",
			    NULL };
	char *badport[] = { "messip-mgr", "-t", "-c", path, "-p", "x", NULL };
	char *badw[] = { "messip-mgr", "-t", "-c", path, "-w", "0", NULL };
	char *okw[] = { "messip-mgr", "-t", "-c", path, "-w", "2", "-p",
			"9999", NULL };
	char *badopt[] = { "messip-mgr", "-Z", NULL };

	write_file("workers 2\nlisten 127.0.0.1:9300\n");
	CU_ASSERT(run(good, err, sizeof(err)) == 0);
	CU_ASSERT(strstr(err, "OK") != NULL);
	CU_ASSERT(run(okw, err, sizeof(err)) == 0);
	CU_ASSERT(run(badport, err, sizeof(err)) == 1);
	CU_ASSERT(run(badw, err, sizeof(err)) == 1);
	CU_ASSERT(strstr(err, "workers") != NULL);
	CU_ASSERT(run(badopt, err, sizeof(err)) == 1);
	/* An explicit -c of a missing file is an error. */
	CU_ASSERT(run(missing, err, sizeof(err)) == 1);
	CU_ASSERT(strstr(err, "/nonexistent.conf") != NULL);

	write_file("workers 2\n# fine\nmax_channels many\n");
	CU_ASSERT(run(good, err, sizeof(err)) == 1);
	snprintf(want, sizeof(want), "%s:3: max_channels: ", path);
	CU_ASSERT(strstr(err, want) != NULL);
	if (!strstr(err, want))
		fprintf(stderr, "got: %s\n", err);
	/* The same file stops a real start, with the same message. */
	{
		char *start[] = { "messip-mgr", "-f", "-c", path, NULL };

		CU_ASSERT(run(start, err, sizeof(err)) == 1);
		CU_ASSERT(strstr(err, want) != NULL);
	}
	unlink(path);
}

/* The installed example file parses, and holds exactly the defaults. */
static void test_example_file(void)
{
	struct mgr_config c, d;
	char err[MGR_ERR_MAX];
	int rc;

	rc = mgr_config_load(&c, MGR_TOP_SRCDIR "/mgrd/messip-mgr.conf.example",
			     err, sizeof(err));
	if (rc)
		fprintf(stderr, "%s\n", err);
	CU_ASSERT_FATAL(rc == 0);
	mgr_config_defaults(&d);
	CU_ASSERT(memcmp(&c, &d, sizeof(c)) == 0);
}

static const struct mp_test_case tests[] = {
	{ "the example file is the defaults", test_example_file },
	{ "built-in defaults", test_defaults },
	{ "a file with every key", test_every_key },
	{ "errors name file:line: key: reason", test_errors },
	{ "reload: reloadable keys only, bounds on import",
	  test_reload_semantics },
	{ "messip-mgr -t, -c, -p, -w exit codes", test_binary_check },
	MP_TEST_END
};

int main(void)
{
	mp_test_init("test_mgr_config", 60);
	mgr_log_setup(MGR_LOG_ERROR, MGR_LOG_STDERR);
	return mp_test_main("mgr_config", tests);
}
