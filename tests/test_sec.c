/*
 * test_sec — authentication, access policy and limits of messip-mgr
 * against real managers (tests/mp_mgrproc.h):
 *   - a manager told to listen beyond loopback without a secret refuses
 *     to start and names the key to set; a secret file open to group or
 *     others is refused by the manager (-t) and by the library;
 *   - the right secret connects and works; a wrong secret, no secret, and
 *     a proof captured from one exchange and replayed on a raw socket all
 *     get EACCES, while the manager keeps serving others;
 *   - an unauthenticated peer is closed at the handshake deadline, and a
 *     pre-authentication frame larger than AUTH is refused on its header;
 *   - the access policy: root creates its names, a process of another
 *     uid (fork + setuid nobody; needs root) gets EACCES on create and on
 *     connect where the policy says so;
 *   - max_connections_per_peer: the extra connection from one address is
 *     closed at once, other addresses are served.
 */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "mp_auth.h"
#include "mp_wire.h"
#include "test_fault_util.h"

static char dir[64];
static char good_file[128], wrong_file[128], badmode_file[128];
static char policy_file[128];

static void write_secret(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	fchmod(fd, mode);
	close(fd);
}

static void cleanup_files(void)
{
	unlink(good_file);
	unlink(wrong_file);
	unlink(badmode_file);
	unlink(policy_file);
	rmdir(dir);
}

static void use_secret(const char *path)
{
	if (path)
		setenv("MESSIP_SECRET_FILE", path, 1);
	else
		unsetenv("MESSIP_SECRET_FILE");
}

/* ---- raw protocol client ------------------------------------------------ */

/* Blocking TCP connection to 127.0.0.1:port from source address src
 * (NULL: any), with a receive timeout; fd or -1. */
static int raw_connect(const char *src, int port, int rcv_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct timeval tv = {rcv_ms / 1000, (rcv_ms % 1000) * 1000};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (src) {
		inet_pton(AF_INET, src, &a.sin_addr);
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			goto fail;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	a.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		goto fail;
	return fd;
fail:
	close(fd);
	return -1;
}

/* Encode m into out (for replays); its size or -1. */
static int raw_encode(const struct mp_wire_msg *m, uint8_t *out, size_t cap)
{
	return mp_wire_encode(m, out, cap);
}

static int raw_write(int fd, const void *p, size_t n)
{
	return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int raw_send(int fd, const struct mp_wire_msg *m)
{
	uint8_t b[512];
	int n = raw_encode(m, b, sizeof(b));

	return n > 0 ? raw_write(fd, b, (size_t)n) : -1;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = recv(fd, p + got, n - got, 0);

		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	return 1;
}

/* One frame into m (data points into buf): 1, 0 at EOF, -1 error or
 * timeout. */
static int raw_recv(int fd, struct mp_wire_msg *m, uint8_t *buf, size_t cap)
{
	struct mp_wire_hdr h;
	int rc = read_full(fd, buf, MP_WIRE_HDR_SIZE);

	if (rc <= 0)
		return rc;
	if (mp_wire_decode_hdr(buf, MP_WIRE_HDR_SIZE, 65536, &h) < 0 ||
	    MP_WIRE_HDR_SIZE + (size_t)h.len > cap)
		return -1;
	rc = read_full(fd, buf + MP_WIRE_HDR_SIZE, h.len);
	if (rc <= 0)
		return -1;
	return mp_wire_decode(buf, MP_WIRE_HDR_SIZE + h.len, 65536, m) > 0 ? 1
									   : -1;
}

static void raw_hello(struct mp_wire_msg *m, uint32_t reqid)
{
	memset(m, 0, sizeof(*m));
	m->op = MP_OP_HELLO;
	m->reqid = reqid;
	m->a = (int32_t)getpid();
	snprintf(m->id, sizeof(m->id), "raw");
}

/* ---- helpers --------------------------------------------------------------
 */

/* The authenticated manager still registers, names and answers. */
static void check_still_serving(void)
{
	messip_cnx_t *cnx;
	messip_channel_t *ch;

	use_secret(good_file);
	cnx = api_connect("alive");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_create(cnx, "sec.alive", 2000, 0);
	CU_ASSERT(ch != NULL);
	if (ch)
		CU_ASSERT(messip_channel_delete(ch, 2000) == 0);
	messip_disconnect(cnx, 2000);
}

/* ---- tests ------------------------------------------------------------------
 */

static void test_refuse_remote_without_auth(void)
{
	char conf[512], out[2048];
	int port = mp_free_port();

	snprintf(conf, sizeof(conf),
		 "listen 0.0.0.0:%d\nstatus_listen off\nworkers 1\n", port);
	CU_ASSERT(mp_mgrproc_run(conf, "-f", out, sizeof(out)) == 1);
	CU_ASSERT(strstr(out, "auth_secret_file") != NULL);
	CU_ASSERT(strstr(out, "not a loopback address") != NULL);
	fprintf(stderr, "  refused: %s", out);
	/* The same address with a secret is a good configuration. */
	snprintf(conf, sizeof(conf),
		 "listen 0.0.0.0:%d\nstatus_listen off\nworkers 1\n"
		 "auth_secret_file %s\n",
		 port, good_file);
	CU_ASSERT(mp_mgrproc_run(conf, "-t", out, sizeof(out)) == 0);
}

static void test_secret_bad_mode_refused(void)
{
	char conf[512], out[2048];
	messip_cnx_t *cnx;

	snprintf(conf, sizeof(conf), "auth_secret_file %s\n", badmode_file);
	CU_ASSERT(mp_mgrproc_run(conf, "-t", out, sizeof(out)) == 1);
	CU_ASSERT(strstr(out, "chmod 600") != NULL);
	fprintf(stderr, "  manager: %s", out);
	/* The library refuses to use it too. */
	use_secret(badmode_file);
	errno = 0;
	cnx = api_connect("badmode");
	CU_ASSERT(cnx == NULL);
	CU_ASSERT(errno == EACCES);
	if (cnx)
		messip_disconnect(cnx, 1000);
	check_still_serving();
}

static void echo_server(void *arg)
{
	messip_channel_t *ch;
	messip_cnx_t *cnx;
	char buf[64];

	(void)arg;
	use_secret(good_file);
	cnx = api_connect("srv");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, "sec.echo", 2000, 0);
	CHILD_CHECK(ch);
	for (;;) {
		int32_t type;
		int idx = messip_receive(ch, &type, buf, sizeof(buf), 10000);

		if (idx == MESSIP_MSG_TIMEOUT)
			_exit(2);
		if (idx < 0)
			continue;
		messip_reply(ch, idx, type + 1, buf, ch->datalenr, 2000);
		if (type == 99)
			break;
	}
	messip_disconnect(cnx, 2000);
}

static void test_right_secret_works(void)
{
	messip_channel_t *ch = NULL;
	messip_cnx_t *cnx;
	char reply[64];
	int32_t answer = 0;
	pid_t srv = api_fork(echo_server, NULL);

	use_secret(good_file);
	cnx = api_connect("cli");
	CU_ASSERT_FATAL(cnx != NULL);
	ch = messip_channel_locate(cnx, "sec.echo", 5000);
	CU_ASSERT_FATAL(ch != NULL);
	CU_ASSERT(messip_send(ch, 41, "hi", 3, &answer, reply, sizeof(reply),
			      5000) == 0);
	CU_ASSERT(answer == 42);
	CU_ASSERT(strcmp(reply, "hi") == 0);
	CU_ASSERT(messip_buffered_send(ch, 7, "b", 2, 5000) >= 0);
	CU_ASSERT(messip_send(ch, 99, "q", 2, &answer, reply, sizeof(reply),
			      5000) == 0);
	CU_ASSERT(api_child_ok(srv, 10000));
	messip_disconnect(cnx, 2000);
}

static void test_wrong_secret_eacces(void)
{
	messip_cnx_t *cnx;

	use_secret(wrong_file);
	errno = 0;
	cnx = api_connect("wrong");
	CU_ASSERT(cnx == NULL);
	CU_ASSERT(errno == EACCES);
	if (cnx)
		messip_disconnect(cnx, 1000);
	check_still_serving();
}

static void test_no_secret_eacces(void)
{
	messip_cnx_t *cnx;

	if (access("/etc/messip-secret", F_OK) == 0) {
		fprintf(stderr, "  /etc/messip-secret exists: not run\n");
		return;
	}
	use_secret(NULL);
	errno = 0;
	cnx = api_connect("nosecret");
	CU_ASSERT(cnx == NULL);
	CU_ASSERT(errno == EACCES);
	if (cnx)
		messip_disconnect(cnx, 1000);
	check_still_serving();
}

/* One whole exchange with a raw socket (the proof is captured), then the
 * captured AUTH frame on a new connection: refused. */
static void test_replayed_proof_eacces(void)
{
	struct mp_auth_key key;
	uint8_t ns1[MP_AUTH_NONCE], nc[MP_AUTH_NONCE], buf[1024];
	uint8_t auth[MP_AUTH_NONCE + MP_AUTH_MAC], captured[256];
	struct mp_wire_msg m, r;
	char err[256];
	int fd, n, ncap;

	CU_ASSERT_FATAL(mp_auth_key_load(good_file, &key, err, sizeof(err)) ==
			0);
	fd = raw_connect(NULL, api_mgr.port, 3000);
	CU_ASSERT_FATAL(fd >= 0);
	raw_hello(&m, 1);
	CU_ASSERT_FATAL(raw_send(fd, &m) == 0);
	CU_ASSERT_FATAL(raw_recv(fd, &r, buf, sizeof(buf)) == 1);
	CU_ASSERT_FATAL(r.op == MP_OP_CHALLENGE && r.reqid == 1 &&
			r.datalen == MP_AUTH_NONCE);
	memcpy(ns1, r.data, MP_AUTH_NONCE);
	CU_ASSERT(mp_auth_nonce(nc, sizeof(nc)) == 0);
	memcpy(auth, nc, MP_AUTH_NONCE);
	CU_ASSERT(mp_auth_proof(&key, MP_AUTH_CLIENT, ns1, nc,
				auth + MP_AUTH_NONCE) == 0);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_AUTH;
	m.reqid = 2;
	m.data = auth;
	m.datalen = sizeof(auth);
	ncap = raw_encode(&m, captured, sizeof(captured));
	CU_ASSERT_FATAL(ncap > 0);
	CU_ASSERT_FATAL(raw_write(fd, captured, (size_t)ncap) == 0);
	CU_ASSERT_FATAL(raw_recv(fd, &r, buf, sizeof(buf)) == 1);
	CU_ASSERT(r.op == MP_OP_AUTH && r.a == 0);
	/* The manager proved the secret too. */
	CU_ASSERT(mp_auth_check(&key, MP_AUTH_SERVER, ns1, nc, r.data,
				r.datalen) == 0);
	raw_hello(&m, 3);
	CU_ASSERT(raw_send(fd, &m) == 0);
	CU_ASSERT(raw_recv(fd, &r, buf, sizeof(buf)) == 1);
	CU_ASSERT(r.op == MP_OP_WELCOME && r.a == 0);
	close(fd);

	/* Replay on a new connection. */
	fd = raw_connect(NULL, api_mgr.port, 3000);
	CU_ASSERT_FATAL(fd >= 0);
	raw_hello(&m, 1);
	CU_ASSERT_FATAL(raw_send(fd, &m) == 0);
	CU_ASSERT_FATAL(raw_recv(fd, &r, buf, sizeof(buf)) == 1);
	CU_ASSERT_FATAL(r.op == MP_OP_CHALLENGE);
	CU_ASSERT(memcmp(r.data, ns1, MP_AUTH_NONCE) != 0); /* fresh */
	CU_ASSERT_FATAL(raw_write(fd, captured, (size_t)ncap) == 0);
	n = raw_recv(fd, &r, buf, sizeof(buf));
	CU_ASSERT(n == 1 && r.op == MP_OP_AUTH && r.a == EACCES);
	/* ... and the connection is closed, nothing registered. */
	raw_hello(&m, 3);
	raw_send(fd, &m);
	CU_ASSERT(raw_recv(fd, &r, buf, sizeof(buf)) <= 0);
	close(fd);
	mp_auth_key_clear(&key);
	check_still_serving();
}

/* A peer that never answers the challenge is closed at the handshake
 * deadline (500 ms here), however it behaves. */
static void test_handshake_deadline(void)
{
	struct mp_wire_msg m, r;
	uint8_t buf[256];
	int64_t t0;
	int fd, n;

	fd = raw_connect(NULL, api_mgr.port, 5000);
	CU_ASSERT_FATAL(fd >= 0);
	t0 = api_now_ms();
	raw_hello(&m, 1);
	CU_ASSERT(raw_send(fd, &m) == 0);
	CU_ASSERT(raw_recv(fd, &r, buf, sizeof(buf)) == 1);
	CU_ASSERT(r.op == MP_OP_CHALLENGE);
	n = raw_recv(fd, &r, buf, sizeof(buf));
	CU_ASSERT(n == 0);
	CU_ASSERT(api_now_ms() - t0 >= 400);
	CU_ASSERT(api_now_ms() - t0 < 4000);
	fprintf(stderr, "  closed after %lld ms\n",
		(long long)(api_now_ms() - t0));
	close(fd);

	/* A frame larger than AUTH before authentication: closed on its
	 * header, nothing buffered. */
	fd = raw_connect(NULL, api_mgr.port, 3000);
	CU_ASSERT_FATAL(fd >= 0);
	{
		uint8_t h[MP_WIRE_HDR_SIZE] = {MP_WIRE_VERSION,
					       MP_OP_AUTH,
					       0,
					       0,
					       0,
					       0,
					       0,
					       1,
					       0,
					       1,
					       0,
					       0}; /* 64 KiB */

		CU_ASSERT(raw_write(fd, h, sizeof(h)) == 0);
	}
	t0 = api_now_ms();
	CU_ASSERT(raw_recv(fd, &r, buf, sizeof(buf)) <= 0);
	CU_ASSERT(api_now_ms() - t0 < 400);
	close(fd);
	check_still_serving();
}

/* Workers killed under an authenticated client: the library resumes its
 * registration through the same exchange (same channels afterwards). */
static void test_resume_authenticated(void)
{
	messip_cnx_t *srv, *cli;
	messip_channel_t *ch;
	pid_t kids[16];
	int n;

	use_secret(good_file);
	srv = api_connect("resumer");
	CU_ASSERT_FATAL(srv != NULL);
	ch = messip_channel_create(srv, "sec.resume", 2000, 0);
	CU_ASSERT_FATAL(ch != NULL);
	n = fault_children_of(api_mgr.pid, kids, 16);
	CU_ASSERT(n >= 2);
	for (int i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	api_sleep_ms(300);
	/* A request on the old connection: resumed, authenticated again. */
	CU_ASSERT(messip_channel_create(srv, "sec.resume2", 5000, 0) != NULL);
	/* The first channel survived: the registration was resumed, not
	 * made anew. */
	cli = api_connect("checker");
	CU_ASSERT_FATAL(cli != NULL);
	CU_ASSERT(messip_channel_connect(cli, "sec.resume", 2000) != NULL);
	messip_disconnect(cli, 2000);
	messip_disconnect(srv, 2000);
}

/* Policy files that do not parse stop the manager with file:line. */
static void test_policy_syntax(void)
{
	static const struct {
		const char *text, *want;
	} bad[] = {
		{"allow uid:x all *\n", ":1: uid:N needs a number"},
		{"# c\nallow nobody-at-all all *\n", ":2: expected uid:N"},
		{"deny any delete *\n", ":1: OPS: expected create"},
		{"allow any all\n", ":1: expected 'allow|deny WHO OPS"},
		{"default maybe\n", ":1: expected 'default allow'"},
		{"allow user:no-such-user-xq all *\n", ":1: no such user"},
	};
	char conf[512], out[2048];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *f = fopen(policy_file, "w");

		CU_ASSERT_FATAL(f != NULL);
		fputs(bad[i].text, f);
		fclose(f);
		snprintf(conf, sizeof(conf), "access_policy %s\n",
			 policy_file);
		CU_ASSERT(mp_mgrproc_run(conf, "-t", out, sizeof(out)) == 1);
		if (!strstr(out, bad[i].want)) {
			fprintf(stderr, "  policy %zu: got '%s'\n", i, out);
			CU_FAIL("message");
		}
	}
	unlink(policy_file);
}

/* ---- access policy ------------------------------------------------------- */

static void nobody_client(void *arg)
{
	const char *ref = arg;
	messip_channel_t *ch;
	messip_cnx_t *cnx;

	CHILD_CHECK(setgroups(0, NULL) == 0);
	CHILD_CHECK(setgid(65534) == 0 && setuid(65534) == 0);
	use_secret(NULL);
	cnx = messip_connect(ref, "nobody", 5000);
	CHILD_CHECK(cnx);
	/* Squatting root's prefix: refused. */
	errno = 0;
	ch = messip_channel_create(cnx, "sec.squat", 2000, 0);
	CHILD_CHECK(ch == NULL && errno == EACCES);
	/* Connecting to root's channel: refused. */
	errno = 0;
	ch = messip_channel_connect(cnx, "sec.owned", 2000);
	CHILD_CHECK(ch == NULL && errno == EACCES);
	/* The public prefix: allowed to both. */
	ch = messip_channel_connect(cnx, "pub.open", 2000);
	CHILD_CHECK(ch != NULL);
	ch = messip_channel_create(cnx, "pub.mine", 2000, 0);
	CHILD_CHECK(ch != NULL);
	/* Its primary group (65534) may create grp.* (user database). */
	ch = messip_channel_create(cnx, "grp.nobody", 2000, 0);
	CHILD_CHECK(ch != NULL);
	messip_disconnect(cnx, 2000);
}

static void test_policy_uid(void)
{
	struct mp_mgrproc pm;
	messip_channel_t *owned, *open, *denied;
	messip_cnx_t *cnx;
	char conf[512];
	FILE *f;
	pid_t pid;

	/* Root only (mp_test_needs in main): it forks a client that
	 * setuid()s to nobody. */
	f = fopen(policy_file, "w");
	CU_ASSERT_FATAL(f != NULL);
	/* Root's success on sec.* depends on the kernel telling uid 0:
	 * anyone else, or an unknown identity, is denied there. */
	fprintf(f, "# test policy\n"
		   "allow uid:0 all    sec.*\n"
		   "deny  any   all    sec.*\n"
		   "allow any   all    pub.*\n"
		   "allow gid:65534 create grp.*\n"
		   "deny  any   create *\n"
		   "allow known connect *\n"
		   "default deny\n");
	fclose(f);
	snprintf(conf, sizeof(conf),
		 "log_level warning\nworkers 2\naccess_policy %s\n",
		 policy_file);
	CU_ASSERT_FATAL(mp_mgrproc_start(&pm, 0, conf) == 0);
	use_secret(NULL);
	cnx = messip_connect(pm.ref, "root", 5000);
	CU_ASSERT_FATAL(cnx != NULL);
	owned = messip_channel_create(cnx, "sec.owned", 2000, 0);
	CU_ASSERT(owned != NULL);
	open = messip_channel_create(cnx, "pub.open", 2000, 0);
	CU_ASSERT(open != NULL);
	/* Nobody, root included, may create outside the two prefixes. */
	errno = 0;
	denied = messip_channel_create(cnx, "elsewhere", 2000, 0);
	CU_ASSERT(denied == NULL && errno == EACCES);
	/* Root is not in group 65534. */
	errno = 0;
	denied = messip_channel_create(cnx, "grp.root", 2000, 0);
	CU_ASSERT(denied == NULL && errno == EACCES);

	pid = api_fork(nobody_client, pm.ref);
	CU_ASSERT(api_child_ok(pid, 15000));
	/* Root still works on the same manager. */
	CU_ASSERT(messip_channel_connect(cnx, "pub.open", 2000) != NULL);
	messip_disconnect(cnx, 2000);
	mp_mgrproc_stop(&pm);
	unlink(policy_file);
}

/* ---- per-peer connection limit ---------------------------------------- */

/* An open TCP connection is still open: a read times out (no EOF). */
static int still_open(int fd)
{
	uint8_t b;
	struct timeval tv = {0, 200000};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return recv(fd, &b, 1, 0) < 0 &&
	       (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void test_per_peer_limit(void)
{
	struct mp_mgrproc lm;
	messip_cnx_t *cnx;
	int fds[3], extra;
	uint8_t b;

	CU_ASSERT_FATAL(mp_mgrproc_start(&lm, 2,
					 "log_level error\n"
					 "max_connections_per_peer 3\n") == 0);
	api_sleep_ms(100); /* the start-up probe's close is seen */
	for (int i = 0; i < 3; i++) {
		fds[i] = raw_connect("127.0.0.2", lm.port, 2000);
		CU_ASSERT_FATAL(fds[i] >= 0);
	}
	api_sleep_ms(100);
	extra = raw_connect("127.0.0.2", lm.port, 2000);
	CU_ASSERT_FATAL(extra >= 0);
	/* Accepted by the kernel, closed by the manager at once. */
	CU_ASSERT(recv(extra, &b, 1, 0) == 0);
	close(extra);
	for (int i = 0; i < 3; i++)
		CU_ASSERT(still_open(fds[i]));
	/* Another address is served meanwhile. */
	use_secret(NULL);
	cnx = messip_connect(lm.ref, "other", 3000);
	CU_ASSERT(cnx != NULL);
	if (cnx)
		CU_ASSERT(messip_channel_create(cnx, "x", 2000, 0) != NULL);
	/* Frames pipelined behind the HELLO are judged as a registered
	 * connection's: a 100-byte BSEND is not refused as oversized. */
	{
		static uint8_t data[100];
		struct mp_wire_msg m, r;
		uint8_t out[512], in[512];
		int fd = raw_connect(NULL, lm.port, 3000), n;

		CU_ASSERT_FATAL(fd >= 0);
		raw_hello(&m, 1);
		n = raw_encode(&m, out, sizeof(out));
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_BSEND;
		m.reqid = 2;
		m.b = 3; /* a channel it never connected to */
		m.data = data;
		m.datalen = sizeof(data);
		n += raw_encode(&m, out + n, sizeof(out) - (size_t)n);
		CU_ASSERT(raw_write(fd, out, (size_t)n) == 0);
		CU_ASSERT(raw_recv(fd, &r, in, sizeof(in)) == 1);
		CU_ASSERT(r.op == MP_OP_WELCOME && r.a == 0);
		CU_ASSERT(raw_recv(fd, &r, in, sizeof(in)) == 1);
		CU_ASSERT(r.op == MP_OP_RESULT && r.reqid == 2 &&
			  r.a == EACCES);
		close(fd);
	}
	/* A connection closed gives its place back. */
	close(fds[0]);
	api_sleep_ms(200);
	fds[0] = raw_connect("127.0.0.2", lm.port, 2000);
	CU_ASSERT(fds[0] >= 0 && still_open(fds[0]));
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	if (cnx)
		messip_disconnect(cnx, 2000);
	mp_mgrproc_stop(&lm);
}

static const struct mp_test_case tests[] = {
	{"listen beyond loopback without auth: start refused, key named",
	 test_refuse_remote_without_auth},
	{"secret file readable by group or others: refused by both ends",
	 test_secret_bad_mode_refused},
	{"right secret: connects, creates, sends", test_right_secret_works},
	{"wrong secret: EACCES", test_wrong_secret_eacces},
	{"no secret: EACCES", test_no_secret_eacces},
	{"replayed proof on a raw socket: EACCES", test_replayed_proof_eacces},
	{"unauthenticated peer: closed at the handshake deadline",
	 test_handshake_deadline},
	{"workers killed: an authenticated registration resumes",
	 test_resume_authenticated},
	{"policy file with a bad line: start refused with file:line",
	 test_policy_syntax},
	{"policy: root creates, nobody gets EACCES on create and connect",
	 test_policy_uid},
	{"max_connections_per_peer: extra connection closed, others served",
	 test_per_peer_limit},
	MP_TEST_END,
};

int main(void)
{
	char conf[512];
	int rc;

	mp_test_init("test_sec", 60);
	mp_test_needs(test_policy_uid, mp_test_need_root);
	snprintf(dir, sizeof(dir), "/tmp/messip-sec-%ld", (long)getpid());
	if (mkdir(dir, 0700) < 0)
		return 1;
	snprintf(good_file, sizeof(good_file), "%s/good", dir);
	snprintf(wrong_file, sizeof(wrong_file), "%s/wrong", dir);
	snprintf(badmode_file, sizeof(badmode_file), "%s/badmode", dir);
	snprintf(policy_file, sizeof(policy_file), "%s/policy", dir);
	mp_test_on_cleanup(cleanup_files);
	write_secret(good_file, "correct horse battery staple 42\n", 0600);
	write_secret(wrong_file, "incorrect horse battery staple 7\n", 0600);
	write_secret(badmode_file, "correct horse battery staple 42\n", 0644);
	snprintf(conf, sizeof(conf),
		 "auth_secret_file %s\nhandshake_timeout_ms 500\n", good_file);
	api_start_mgr(2, conf);
	rc = mp_test_main("sec", tests);
	api_stop_mgr();
	return rc;
}
