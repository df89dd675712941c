/*
 * test_api_basic — libmessip against a real manager: finding the manager,
 * logging, names, synchronous messages (plain, truncated, dynamic,
 * vectored), out-of-order replies, several channels in one process and
 * messip_channel_fd.
 */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "test_api_util.h"

#define BIG (64 * 1024)

/* ---- an echo server in a child process ---------------------------------- */

enum srv_mode { SRV_PLAIN, SRV_DYNAMIC, SRV_VECTOR };

struct srv_cfg {
	const char *name;
	int maxlen; /* receive buffer (SRV_PLAIN / SRV_VECTOR) */
	enum srv_mode mode;
};

#define T_QUIT 99

/*
 * Replies answer = 2 * type and, as data, the whole message taken from
 * receive_allmsg[index]; answer -1 when what receive reported is wrong
 * (datalen, datalenr, buffer contents against receive_allmsg).
 */
static void echo_server(void *arg)
{
	const struct srv_cfg *cfg = arg;
	static char buf[BIG + 16];
	messip_cnx_t *cnx = api_connect("echo");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, cfg->name, 5000, 0);
	CHILD_CHECK(ch);
	for (;;) {
		int32_t type = -1, answer;
		void *dyn = NULL;
		char *got = buf;
		int idx, ok = 1, want;

		if (cfg->mode == SRV_DYNAMIC) {
			idx = messip_receive(ch, &type, &dyn, 0, 20000);
			got = dyn;
		} else if (cfg->mode == SRV_VECTOR) {
			int half = cfg->maxlen / 2;
			struct iovec v[2] = {
				{buf, (size_t)half},
				{buf + half, (size_t)(cfg->maxlen - half)}};

			idx = messip_receivev(ch, &type, v, 2, 20000);
		} else {
			idx = messip_receive(ch, &type, buf, cfg->maxlen,
					     20000);
		}
		if (idx < 0)
			continue; /* events: not this test's business */
		want = ch->datalen;
		if (cfg->mode != SRV_DYNAMIC && want > cfg->maxlen)
			want = cfg->maxlen;
		if (ch->datalenr != want || ch->datalen < 0 ||
		    !ch->receive_allmsg || !ch->receive_allmsg[idx] ||
		    (want &&
		     memcmp(got, ch->receive_allmsg[idx], (size_t)want) != 0))
			ok = 0;
		answer = ok ? 2 * type : -1;
		if (cfg->mode == SRV_VECTOR) {
			int half = ch->datalen / 2;
			struct iovec v[2] = {
				{ch->receive_allmsg[idx], (size_t)half},
				{(char *)ch->receive_allmsg[idx] + half,
				 (size_t)(ch->datalen - half)}};

			CHILD_CHECK(messip_replyv(ch, idx, answer, v, 2,
						  5000) == 0);
		} else {
			CHILD_CHECK(messip_reply(ch, idx, answer,
						 ch->receive_allmsg[idx],
						 ch->datalen, 5000) == 0);
		}
		free(dyn);
		if (type == T_QUIT)
			break;
	}
	messip_channel_delete(ch, 5000); /* clients may remain: fine */
	messip_disconnect(cnx, 5000);
}

static pid_t start_echo(struct srv_cfg *cfg)
{
	return api_fork(echo_server, cfg);
}

static void stop_echo(messip_channel_t *ch, pid_t pid)
{
	int32_t answer = 0;

	CU_ASSERT_EQUAL(messip_send(ch, T_QUIT, "", 0, &answer, NULL, 0, 5000),
			0);
	CU_ASSERT_EQUAL(answer, 2 * T_QUIT);
	CU_ASSERT(api_child_ok(pid, 5000));
}

/* ---- logging ------------------------------------------------------------- */

static char logged[256];
static unsigned logged_level;
static int nlogged;

static void capture(unsigned level, const char *msg)
{
	snprintf(logged, sizeof(logged), "%s", msg);
	logged_level = level;
	nlogged++;
}

/* Run fn with stderr redirected to a pipe; returns bytes it wrote. */
static int stderr_bytes(void (*fn)(void))
{
	char buf[4096];
	int p[2], saved, n;

	if (pipe(p) < 0)
		return -1;
	fflush(stderr);
	saved = dup(2);
	dup2(p[1], 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	n = (int)read(p[0], buf, sizeof(buf));
	close(p[0]);
	return n < 0 ? 0 : n;
}

static void app_log(void)
{
	messip_log(MESSIP_LOG_ERROR, "application line %d\n", 7);
}

static void lib_failure(void)
{
	/* Fails inside the library (no manager there): must print nothing
	 * when no logger is installed. */
	int port = mp_free_port();
	char ref[64];

	snprintf(ref, sizeof(ref), "127.0.0.1:%d", port);
	messip_set_log_level(0x1f);
	if (messip_connect(ref, "x", 1000) != NULL)
		abort();
	messip_set_log_level(MESSIP_LOG_ERROR | MESSIP_LOG_WARNING);
}

static void test_init_and_logging(void)
{
	messip_init();
	messip_init();
	CU_ASSERT_EQUAL(messip_get_log_level(),
			MESSIP_LOG_ERROR | MESSIP_LOG_WARNING);
	/* No logger: the application's own lines go to stderr, the
	 * library's never. */
	CU_ASSERT(stderr_bytes(app_log) > 0);
	CU_ASSERT_EQUAL(stderr_bytes(lib_failure), 0);

	messip_set_logger(capture);
	nlogged = 0;
	CU_ASSERT(messip_log(MESSIP_LOG_WARNING, "w %s", "one") > 0);
	CU_ASSERT_EQUAL(nlogged, 1);
	CU_ASSERT_STRING_EQUAL(logged, "w one");
	CU_ASSERT_EQUAL(logged_level, MESSIP_LOG_WARNING);
	CU_ASSERT_EQUAL(messip_log(MESSIP_LOG_DEBUG, "filtered"), 0);
	CU_ASSERT_EQUAL(nlogged, 1);
	messip_set_log_level(MESSIP_LOG_DEBUG);
	CU_ASSERT_EQUAL(messip_get_log_level(), MESSIP_LOG_DEBUG);
	messip_log(MESSIP_LOG_DEBUG, "now %d", 2);
	CU_ASSERT_EQUAL(nlogged, 2);
	CU_ASSERT_STRING_EQUAL(logged, "now 2");
	/* With a logger, the library's own lines reach it, with an id. */
	messip_set_log_level(0x1f);
	nlogged = 0;
	lib_failure();
	CU_ASSERT(nlogged > 0);
	CU_ASSERT(strncmp(logged, "MESSIP-", 7) == 0);
	messip_set_logger(NULL);
	messip_set_log_level(MESSIP_LOG_ERROR | MESSIP_LOG_WARNING);
	api_verbose();
}

/* ---- finding the manager ------------------------------------------------- */

static void expect_connect(const char *ref, int ok, int err)
{
	messip_cnx_t *cnx;

	errno = 0;
	cnx = messip_connect(ref, "refs", 2000);
	if (ok) {
		CU_ASSERT_PTR_NOT_NULL(cnx);
		if (!cnx)
			fprintf(stderr, "connect %s: %s\n", ref ? ref : "NULL",
				strerror(errno));
		else
			CU_ASSERT_EQUAL(messip_disconnect(cnx, 2000), 0);
	} else {
		CU_ASSERT_PTR_NULL(cnx);
		CU_ASSERT_EQUAL(errno, err);
		if (errno != err)
			fprintf(stderr, "connect %s: %s, wanted %s\n",
				ref ? ref : "NULL", strerror(errno),
				strerror(err));
	}
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return;
	fputs(text, f);
	fclose(f);
}

static void test_connect_resolution(void)
{
	char ref[64], dead[64], conf[128], text[256];
	int dead_port = mp_free_port();

	snprintf(dead, sizeof(dead), "127.0.0.1:%d", dead_port);
	unsetenv("MESSIP_MGR");
	/* The explicit reference. */
	expect_connect(api_mgr.ref, 1, 0);
	expect_connect(dead, 0, ECONNREFUSED);
	snprintf(ref, sizeof(ref), "localhost:%d", api_mgr.port);
	expect_connect(ref, 1, 0);
	expect_connect("127.0.0.1:notaport", 0, EINVAL);
	expect_connect("127.0.0.1:0", 0, EINVAL);
	expect_connect("127.0.0.1:70000", 0, EINVAL);
	expect_connect(":9200", 0, EINVAL);
	expect_connect("", 0, EINVAL);
	expect_connect("[::1", 0, EINVAL);
	expect_connect("no-such-host.invalid:9200", 0, EINVAL);

	/* MESSIP_MGR when mgr_ref is NULL, and the argument still wins. */
	setenv("MESSIP_MGR", api_mgr.ref, 1);
	expect_connect(NULL, 1, 0);
	expect_connect(dead, 0, ECONNREFUSED);
	setenv("MESSIP_MGR", dead, 1);
	expect_connect(NULL, 0, ECONNREFUSED);
	expect_connect(api_mgr.ref, 1, 0);

	/* The file (MESSIP_CONFIG stands for /etc/messip): first
	 * non-comment line "host [port [status_port]]"; MESSIP_MGR wins. */
	snprintf(conf, sizeof(conf), "/tmp/messip-test-%ld.conf",
		 (long)getpid());
	snprintf(text, sizeof(text),
		 "# comment\n\n   # another\n"
		 "127.0.0.1 %d 9999\nlocalhost 1\n",
		 api_mgr.port);
	write_file(conf, text);
	setenv("MESSIP_CONFIG", conf, 1);
	unsetenv("MESSIP_MGR");
	expect_connect(NULL, 1, 0);
	setenv("MESSIP_MGR", dead, 1);
	expect_connect(NULL, 0, ECONNREFUSED);
	unsetenv("MESSIP_MGR");
	snprintf(text, sizeof(text), "127.0.0.1 %d\n", dead_port);
	write_file(conf, text);
	expect_connect(NULL, 0, ECONNREFUSED);
	write_file(conf, "127.0.0.1 port\n");
	expect_connect(NULL, 0, EINVAL);
	unlink(conf);
	unsetenv("MESSIP_CONFIG");

	CU_ASSERT_EQUAL(messip_disconnect(NULL, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
}

static void test_connect_timeout(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	char ref[64];
	int64_t t0, dt;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	/* Something that accepts TCP but never answers HELLO. */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CU_ASSERT_FATAL(listen(fd, 4) == 0);
	getsockname(fd, (struct sockaddr *)&sa, &len);
	snprintf(ref, sizeof(ref), "127.0.0.1:%d", ntohs(sa.sin_port));
	t0 = api_now_ms();
	CU_ASSERT_PTR_NULL(messip_connect(ref, "slow", 300));
	dt = api_now_ms() - t0;
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT(dt >= 250 && dt < 2000);
	close(fd);
}

/* ---- names ----------------------------------------------------------------
 */

struct holder_arg {
	const char *name;
	struct api_gate *go;	/* parent -> child: disconnect now */
	struct api_gate *ready; /* child -> parent: connected */
};

/* Connect to a channel, say so, wait for the go, disconnect cleanly. */
static void holder(void *p)
{
	struct holder_arg *a = p;
	messip_cnx_t *cnx = api_connect("holder");
	messip_channel_t *ch;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	CHILD_CHECK(api_gate_wait(a->go, 10000));
	CHILD_CHECK(messip_channel_disconnect(ch, 5000) == MESSIP_OK);
	CHILD_CHECK(messip_disconnect(cnx, 5000) == 0);
}

static void test_names(void)
{
	char longname[MESSIP_CHANNEL_NAME_MAXLEN + 2];
	messip_cnx_t *a = api_connect("namesA"), *b = api_connect("namesB");
	messip_channel_t *ch, *ch2;
	struct api_gate go, ready;
	struct holder_arg ha;
	int32_t type;
	int64_t t0;
	pid_t pid;
	int rc;

	CU_ASSERT_FATAL(a && b);
	ch = messip_channel_create(a, "t-names", 2000, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
	CU_ASSERT_STRING_EQUAL(ch->name, "t-names");
	/* Taken: from another registration and from the same one. */
	CU_ASSERT_PTR_NULL(messip_channel_create(b, "t-names", 2000, 0));
	CU_ASSERT_EQUAL(errno, EEXIST);
	CU_ASSERT_PTR_NULL(messip_channel_create(a, "t-names", 2000, 0));
	CU_ASSERT_EQUAL(errno, EEXIST);

	/* Name lengths. */
	memset(longname, 'n', sizeof(longname));
	longname[MESSIP_CHANNEL_NAME_MAXLEN + 1] = '\0';
	CU_ASSERT_PTR_NULL(messip_channel_create(a, longname, 2000, 0));
	CU_ASSERT_EQUAL(errno, ENAMETOOLONG);
	CU_ASSERT_PTR_NULL(messip_channel_connect(b, longname, 2000));
	CU_ASSERT_EQUAL(errno, ENAMETOOLONG);
	CU_ASSERT_PTR_NULL(messip_channel_locate(b, longname, 2000));
	CU_ASSERT_EQUAL(errno, ENAMETOOLONG);
	longname[MESSIP_CHANNEL_NAME_MAXLEN] = '\0';
	ch2 = messip_channel_create(a, longname, 2000, 0);
	CU_ASSERT_PTR_NOT_NULL(ch2);
	if (ch2)
		CU_ASSERT_EQUAL(messip_channel_delete(ch2, 2000), 0);
	CU_ASSERT_PTR_NULL(messip_channel_create(a, "", 2000, 0));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(messip_channel_create(a, NULL, 2000, 0));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(messip_channel_create(NULL, "x", 2000, 0));
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_PTR_NULL(messip_channel_create(a, "t-neg", 2000, -1));
	CU_ASSERT_EQUAL(errno, EINVAL);

	/* Unknown names: connect fails at once, locate waits. */
	t0 = api_now_ms();
	CU_ASSERT_PTR_NULL(messip_channel_connect(b, "t-nope", 5000));
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT(api_now_ms() - t0 < 1000);
	t0 = api_now_ms();
	CU_ASSERT_PTR_NULL(messip_channel_locate(b, "t-nope", 300));
	CU_ASSERT_EQUAL(errno, ETIMEDOUT);
	CU_ASSERT(api_now_ms() - t0 >= 250);

	/* Delete with a client connected: the count, nothing deleted. */
	api_gate_init(&go);
	api_gate_init(&ready);
	ha.name = "t-names";
	ha.go = &go;
	ha.ready = &ready;
	pid = api_fork(holder, &ha);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 10000));
	CU_ASSERT_EQUAL(messip_channel_delete(ch, 2000), 1);
	api_gate_signal(&go);
	/* Its DISCONNECT arrives (and the HELLO of its link before). */
	rc = messip_receive(ch, &type, NULL, 0, 5000);
	CU_ASSERT_EQUAL(rc, MESSIP_MSG_DISCONNECT);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "holder");
	CU_ASSERT(api_child_ok(pid, 5000));
	CU_ASSERT_EQUAL(messip_channel_delete(ch, 2000), 0);
	api_gate_close(&go);
	api_gate_close(&ready);
	/* The name is free again. */
	CU_ASSERT_PTR_NULL(messip_channel_connect(b, "t-names", 2000));
	CU_ASSERT_EQUAL(errno, ENOENT);
	ch = messip_channel_create(b, "t-names", 2000, 0);
	CU_ASSERT_PTR_NOT_NULL(ch);
	CU_ASSERT_EQUAL(messip_channel_delete(ch, 2000), 0);
	/* A create that times out leaves no name behind, even if the
	 * manager did it after all (the late success is undone). */
	ch = messip_channel_create(a, "t-zero", 0, 0);
	if (ch) {
		CU_ASSERT_EQUAL(messip_channel_delete(ch, 2000), 0);
	} else {
		CU_ASSERT_EQUAL(errno, ETIMEDOUT);
		api_sleep_ms(100);
	}
	ch = messip_channel_create(a, "t-zero", 2000, 0);
	CU_ASSERT_PTR_NOT_NULL(ch);
	if (ch)
		CU_ASSERT_EQUAL(messip_channel_delete(ch, 2000), 0);
	CU_ASSERT_EQUAL(messip_disconnect(a, 2000), 0);
	CU_ASSERT_EQUAL(messip_disconnect(b, 2000), 0);
}

/* ---- synchronous messages ------------------------------------------------ */

static void fill(char *p, int n, int seed)
{
	for (int i = 0; i < n; i++)
		p[i] = (char)(seed + i * 7);
}

static void test_send_receive_reply(void)
{
	struct srv_cfg cfg = {"t-echo", BIG + 16, SRV_PLAIN};
	static char out[BIG + 1], in[BIG + 16];
	messip_cnx_t *cnx = api_connect("client");
	messip_channel_t *ch, *again;
	int32_t answer = 0;
	void *dyn = NULL;
	pid_t pid;

	CU_ASSERT_FATAL(cnx != NULL);
	pid = start_echo(&cfg);
	ch = messip_channel_locate(cnx, "t-echo", 5000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "echo");
	CU_ASSERT_STRING_EQUAL(ch->name, "t-echo");

	CU_ASSERT_EQUAL(
		messip_send(ch, 5, "hello", 5, &answer, in, sizeof(in), 5000),
		0);
	CU_ASSERT_EQUAL(answer, 10);
	CU_ASSERT_EQUAL(ch->datalen, 5);
	CU_ASSERT_EQUAL(ch->datalenr, 5);
	CU_ASSERT(memcmp(in, "hello", 5) == 0);
	CU_ASSERT_STRING_EQUAL(ch->remote_id, "echo");

	/* Empty message, empty reply; NULL answer pointer allowed. */
	CU_ASSERT_EQUAL(messip_send(ch, 6, NULL, 0, &answer, NULL, 0, 5000), 0);
	CU_ASSERT_EQUAL(answer, 12);
	CU_ASSERT_EQUAL(ch->datalen, 0);
	CU_ASSERT_EQUAL(messip_send(ch, 6, NULL, 0, NULL, NULL, 0, 5000), 0);

	/* The largest message, both ways. */
	fill(out, BIG, 3);
	CU_ASSERT_EQUAL(
		messip_send(ch, 7, out, BIG, &answer, in, sizeof(in), 5000), 0);
	CU_ASSERT_EQUAL(answer, 14);
	CU_ASSERT_EQUAL(ch->datalen, BIG);
	CU_ASSERT(memcmp(in, out, BIG) == 0);
	CU_ASSERT_EQUAL(
		messip_send(ch, 7, out, BIG + 1, &answer, in, sizeof(in), 5000),
		-1);
	CU_ASSERT_EQUAL(errno, EMSGSIZE);

	/* A reply longer than the buffer is cut; datalen tells. */
	memset(in, 0, 16);
	CU_ASSERT_EQUAL(
		messip_send(ch, 8, "truncated", 9, &answer, in, 3, 5000), 0);
	CU_ASSERT_EQUAL(ch->datalen, 9);
	CU_ASSERT_EQUAL(ch->datalenr, 3);
	CU_ASSERT(memcmp(in, "tru\0", 4) == 0);

	/* Dynamic mode for the reply. */
	CU_ASSERT_EQUAL(messip_send(ch, 9, out, 1000, &answer, &dyn, 0, 5000),
			0);
	CU_ASSERT_PTR_NOT_NULL(dyn);
	CU_ASSERT_EQUAL(ch->datalenr, 1000);
	if (dyn)
		CU_ASSERT(memcmp(dyn, out, 1000) == 0);
	free(dyn);

	/* Gathered send. */
	{
		struct iovec v[3] = {{"ab", 2}, {NULL, 0}, {"cde", 3}};

		CU_ASSERT_EQUAL(messip_sendv(ch, 10, v, 3, &answer, in,
					     sizeof(in), 5000),
				0);
		CU_ASSERT_EQUAL(answer, 20);
		CU_ASSERT_EQUAL(ch->datalen, 5);
		CU_ASSERT(memcmp(in, "abcde", 5) == 0);
	}

	/* Ping; connecting twice is the same handle, counted. */
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 2000), 0);
	again = messip_channel_connect(cnx, "t-echo", 2000);
	CU_ASSERT_PTR_EQUAL(again, ch);
	CU_ASSERT_EQUAL(messip_channel_disconnect(again, 2000), MESSIP_OK);
	CU_ASSERT_EQUAL(messip_channel_ping(ch, 2000), 0);

	/* Bad arguments. */
	CU_ASSERT_EQUAL(messip_send(ch, 1, "x", -1, &answer, NULL, 0, 100), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_send(ch, 1, NULL, 4, &answer, NULL, 0, 100), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_send(ch, 1, "x", 1, &answer, NULL, -1, 100), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_send(NULL, 1, "x", 1, &answer, NULL, 0, 100),
			-1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_receive(ch, &answer, in, 10, 0), -1);
	CU_ASSERT_EQUAL(errno, EINVAL); /* a client handle */
	CU_ASSERT_EQUAL(messip_channel_fd(ch), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_channel_ping(NULL, 10), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);

	stop_echo(ch, pid);
	CU_ASSERT_EQUAL(messip_channel_disconnect(ch, 2000), MESSIP_OK);
	CU_ASSERT_EQUAL(messip_disconnect(cnx, 2000), 0);
}

/* The server's side of truncation, dynamic mode and vectors. */
static void run_server_mode(const char *name, int maxlen, enum srv_mode mode)
{
	struct srv_cfg cfg = {name, maxlen, mode};
	static char out[BIG], in[BIG];
	messip_cnx_t *cnx = api_connect("client");
	messip_channel_t *ch;
	int32_t answer = 0;
	pid_t pid;
	static const int sizes[] = {0, 1, 15, 16, 17, 100, 4096, BIG};

	CU_ASSERT_FATAL(cnx != NULL);
	pid = start_echo(&cfg);
	ch = messip_channel_locate(cnx, name, 5000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fill(out, sizes[i], (int)i);
		CU_ASSERT_EQUAL(messip_send(ch, 3, out, sizes[i], &answer, in,
					    sizeof(in), 5000),
				0);
		/* -1: the server saw wrong datalen/datalenr/contents. */
		CU_ASSERT_EQUAL(answer, 6);
		CU_ASSERT_EQUAL(ch->datalen, sizes[i]);
		CU_ASSERT(memcmp(in, out, (size_t)sizes[i]) == 0);
	}
	stop_echo(ch, pid);
	messip_disconnect(cnx, 2000);
}

static void test_receive_truncated(void)
{
	run_server_mode("t-trunc", 16, SRV_PLAIN);
}

static void test_receive_dynamic(void)
{
	run_server_mode("t-dyn", 0, SRV_DYNAMIC);
}

static void test_receive_vectored(void)
{
	run_server_mode("t-vec", 20, SRV_VECTOR);
}

/* ---- out-of-order replies ------------------------------------------------ */

struct ooo_arg {
	int32_t type;
};

static void ooo_client(void *p)
{
	struct ooo_arg *a = p;
	messip_cnx_t *cnx = api_connect("ooo-cli");
	messip_channel_t *ch;
	int32_t answer = 0;
	char buf[16];

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, "t-ooo", 5000);
	CHILD_CHECK(ch);
	CHILD_CHECK(messip_send(ch, a->type, &a->type, sizeof(a->type), &answer,
				buf, sizeof(buf), 10000) == 0);
	CHILD_CHECK(answer == a->type * 10);
	CHILD_CHECK(ch->datalen == (int)sizeof(a->type));
	CHILD_CHECK(memcmp(buf, &a->type, sizeof(a->type)) == 0);
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_out_of_order_replies(void)
{
	messip_cnx_t *cnx = api_connect("ooo-srv");
	struct ooo_arg a1 = {1}, a2 = {2}, a3 = {3};
	int idx[3], seen = 0;
	int32_t type[3], buf[4];
	messip_channel_t *ch;
	pid_t p[3];

	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "t-ooo", 2000, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
	p[0] = api_fork(ooo_client, &a1);
	p[1] = api_fork(ooo_client, &a2);
	/* Two requests held at once: distinct small indices. */
	for (int n = 0; n < 2;) {
		int r = messip_receive(ch, &type[n], buf, sizeof(buf), 5000);

		if (r == MESSIP_MSG_DISCONNECT || r == MESSIP_MSG_DISMISSED)
			continue;
		CU_ASSERT_FATAL(r >= 0);
		idx[n] = r;
		CU_ASSERT_EQUAL(buf[0], type[n]);
		n++;
	}
	CU_ASSERT(idx[0] != idx[1]);
	CU_ASSERT(idx[0] >= 0 && idx[0] < 2 && idx[1] >= 0 && idx[1] < 2);
	/* Reply to the second first. */
	for (int n = 1; n >= 0; n--)
		CU_ASSERT_EQUAL(messip_reply(ch, idx[n], type[n] * 10,
					     ch->receive_allmsg[idx[n]], 4,
					     2000),
				0);
	/* Replied indices await nothing any more. */
	CU_ASSERT_EQUAL(messip_reply(ch, idx[0], 0, NULL, 0, 2000), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_reply(ch, 57, 0, NULL, 0, 2000), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(messip_reply(ch, -1, 0, NULL, 0, 2000), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	/* The next request reuses the lowest index. */
	p[2] = api_fork(ooo_client, &a3);
	for (;;) {
		int r = messip_receive(ch, &type[2], buf, sizeof(buf), 5000);

		if (r == MESSIP_MSG_DISCONNECT || r == MESSIP_MSG_DISMISSED) {
			seen++;
			continue;
		}
		CU_ASSERT_EQUAL(r, 0);
		CU_ASSERT_EQUAL(type[2], 3);
		if (r >= 0)
			CU_ASSERT_EQUAL(messip_reply(ch, r, 30, buf, 4, 2000),
					0);
		break;
	}
	for (int n = 0; n < 3; n++)
		CU_ASSERT(api_child_ok(p[n], 5000));
	(void)seen;
	messip_disconnect(cnx, 2000);
}

/* ---- several channels in one process, and messip_channel_fd -------------- */

struct multi_arg {
	const char *name;
	int32_t type;
	int buffered;
};

static void multi_client(void *p)
{
	struct multi_arg *a = p;
	messip_cnx_t *cnx = api_connect("multi");
	messip_channel_t *ch;
	int32_t answer = 0;

	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	if (a->buffered) {
		CHILD_CHECK(messip_buffered_send(ch, a->type, a->name,
						 (int)strlen(a->name),
						 5000) >= 0);
	} else {
		CHILD_CHECK(messip_send(ch, a->type, a->name,
					(int)strlen(a->name), &answer, NULL, 0,
					5000) == 0);
		CHILD_CHECK(answer == a->type);
	}
	messip_channel_disconnect(ch, 2000);
	messip_disconnect(cnx, 2000);
}

static void test_channels_and_fd(void)
{
	messip_cnx_t *cnx = api_connect("multisrv");
	struct multi_arg args[4] = {{"t-multi-a", 1, 1},
				    {"t-multi-b", 2, 1},
				    {"t-multi-a", 3, 0},
				    {"t-multi-b", 4, 0}};
	messip_channel_t *ch[2];
	struct pollfd pf[2];
	int got[5] = {0}, total = 0;
	pid_t pid[4];
	int64_t end;

	CU_ASSERT_FATAL(cnx != NULL);
	ch[0] = messip_channel_create(cnx, "t-multi-a", 2000, 0);
	ch[1] = messip_channel_create(cnx, "t-multi-b", 2000, 0);
	CU_ASSERT_FATAL(ch[0] && ch[1]);
	pf[0].fd = messip_channel_fd(ch[0]);
	pf[1].fd = messip_channel_fd(ch[1]);
	CU_ASSERT(pf[0].fd >= 0 && pf[1].fd >= 0 && pf[0].fd != pf[1].fd);
	pf[0].events = pf[1].events = POLLIN;
	/* Nothing pending: not readable. */
	CU_ASSERT_EQUAL(poll(pf, 2, 50), 0);

	/* Buffered messages first, both through the one manager link:
	 * each must surface on its own channel. */
	pid[0] = api_fork(multi_client, &args[0]);
	pid[1] = api_fork(multi_client, &args[1]);
	CU_ASSERT(api_child_ok(pid[0], 5000));
	CU_ASSERT(api_child_ok(pid[1], 5000));
	pid[2] = api_fork(multi_client, &args[2]);
	pid[3] = api_fork(multi_client, &args[3]);

	/* One poll loop over both channels. */
	end = api_now_ms() + 10000;
	while (total < 4 && api_now_ms() < end) {
		if (poll(pf, 2, 1000) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			char buf[64];
			int32_t type = 0;
			int r;

			if (!(pf[i].revents & POLLIN))
				continue;
			r = messip_receive(ch[i], &type, buf, sizeof(buf), 0);
			if (r == MESSIP_MSG_TIMEOUT ||
			    r == MESSIP_MSG_DISCONNECT ||
			    r == MESSIP_MSG_DISMISSED)
				continue;
			CU_ASSERT(r >= 0 || r == MESSIP_MSG_NOREPLY);
			CU_ASSERT(type >= 1 && type <= 4);
			if (type < 1 || type > 4)
				continue;
			/* On the right channel (odd: a, even: b). */
			CU_ASSERT_EQUAL(i, (type + 1) % 2);
			CU_ASSERT_EQUAL(ch[i]->datalen, 9);
			CU_ASSERT(memcmp(buf, args[type - 1].name, 9) == 0);
			CU_ASSERT_STRING_EQUAL(ch[i]->remote_id, "multi");
			if (r >= 0)
				CU_ASSERT_EQUAL(messip_reply(ch[i], r, type,
							     NULL, 0, 2000),
						0);
			got[type]++;
			total++;
		}
	}
	for (int t = 1; t <= 4; t++)
		CU_ASSERT_EQUAL(got[t], 1);
	CU_ASSERT(api_child_ok(pid[2], 5000));
	CU_ASSERT(api_child_ok(pid[3], 5000));
	messip_disconnect(cnx, 2000);
}

static const struct mp_test_case tests[] = {
	{"init and logging", test_init_and_logging},
	{"connect: reference, MESSIP_MGR, config file",
	 test_connect_resolution},
	{"connect: manager never answers", test_connect_timeout},
	{"names: EEXIST ENAMETOOLONG ENOENT locate delete", test_names},
	{"send receive reply", test_send_receive_reply},
	{"receive: message longer than the buffer", test_receive_truncated},
	{"receive: dynamic mode", test_receive_dynamic},
	{"receive and reply: vectored", test_receive_vectored},
	{"replies out of order, indices reused", test_out_of_order_replies},
	{"several channels, one poll over messip_channel_fd",
	 test_channels_and_fd},
	MP_TEST_END};

int main(void)
{
	int rc;

	mp_test_init("test_api_basic", 90);
	api_start_mgr(2, NULL);
	rc = mp_test_main("api_basic", tests);
	api_stop_mgr();
	return rc;
}
