/*
 * test_direct_auth — the direct client -> server link proves the channel
 * ticket (doc/protocol.md, "Direct link authentication"; issue 6,
 * "Security"): real manager, real servers in child processes, real TCP.
 *
 * Servers run in forked children so that the raw peers of the test
 * program can block; clients that must take the TCP path set
 * MESSIP_NO_SHM (the same-host segment is guarded by /dev/shm
 * permissions instead).  The manager's access policy denies every
 * connect to "d-pol*" (and nothing else), so that the policy test needs
 * no second uid.
 */
#include "config.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "mp_host.h"
#include "mp_rawauth.h"
#include "mp_wire.h"
#include "test_api_util.h"

#define T_QUIT 999 /* asks an echo server to exit */

static char policy_path[64];

/* ---- an echo server in a child ------------------------------------------ */

struct echo_arg {
	const char *name;
	struct api_gate *ready; /* signalled once the channel exists */
	int port_fd;		/* -1, or where the server writes its port */
};

/* The port of this process's one listening TCP socket (the channel's
 * direct port: the server child has no other), or -1. */
static int own_listen_port(void)
{
	for (int fd = 3; fd < 1024; fd++) {
		struct sockaddr_in sa;
		socklen_t len = sizeof(sa);
		int on = 0;
		socklen_t ol = sizeof(on);

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &ol) < 0 ||
		    !on)
			continue;
		if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 &&
		    sa.sin_family == AF_INET)
			return ntohs(sa.sin_port);
	}
	return -1;
}

static void echo_server(void *p)
{
	struct echo_arg *a = p;
	messip_cnx_t *cnx = api_connect("dsrv");
	messip_channel_t *ch;
	char buf[256];
	int32_t type;
	int port;

	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 2000, 0);
	CHILD_CHECK(ch);
	if (a->port_fd >= 0) {
		port = own_listen_port();
		CHILD_CHECK(port > 0);
		CHILD_CHECK(write(a->port_fd, &port, sizeof(port)) ==
			    sizeof(port));
	}
	api_gate_signal(a->ready);
	for (;;) {
		int idx = messip_receive(ch, &type, buf, sizeof(buf), 20000);

		CHILD_CHECK(idx != MESSIP_MSG_TIMEOUT);
		if (idx < 0)
			continue; /* events */
		CHILD_CHECK(messip_reply(ch, idx, type, buf, (int)ch->datalen,
					 2000) == 0);
		if (type == T_QUIT)
			break;
	}
	messip_disconnect(cnx, 2000);
}

/* Ask the server to exit, over a legitimate client link. */
static int echo_quit(const char *name)
{
	messip_cnx_t *cnx = api_connect("dquit");
	messip_channel_t *ch;
	int32_t answer = 0;
	int rc = -1;

	if (!cnx)
		return -1;
	ch = messip_channel_connect(cnx, name, 2000);
	if (ch && messip_send(ch, T_QUIT, "", 0, &answer, NULL, 0, 5000) == 0)
		rc = 0;
	messip_disconnect(cnx, 2000);
	return rc;
}

/* ---- a legitimate client on the TCP path -------------------------------- */

struct cli_arg {
	const char *name;
	int count;
	int shm; /* on the same-host segment (no proof), else TCP */
};

static void echo_client(void *p)
{
	struct cli_arg *a = p;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	char buf[64];

	if (!a->shm)
		setenv("MESSIP_NO_SHM", "1", 1);
	cnx = api_connect("dcli");
	CHILD_CHECK(cnx);
	ch = messip_channel_connect(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	for (int i = 0; i < a->count; i++) {
		if (i == 1) /* the path is known once the link is up */
			CHILD_CHECK(
				messip_channel_path(ch) ==
				(a->shm ? MESSIP_PATH_SHM : MESSIP_PATH_TCP));
		int32_t answer = -1;
		char msg[32];
		int n = snprintf(msg, sizeof(msg), "m%d", i);

		CHILD_CHECK(messip_send(ch, 7 + i, msg, n, &answer, buf,
					sizeof(buf), 5000) == 0);
		CHILD_CHECK(answer == 7 + i && ch->datalen == n &&
			    memcmp(buf, msg, (size_t)n) == 0);
	}
	messip_disconnect(cnx, 2000);
}

static pid_t start_echo(struct echo_arg *a, struct api_gate *ready)
{
	pid_t pid;

	a->ready = ready;
	pid = api_fork(echo_server, a);
	CU_ASSERT_FATAL(api_gate_wait(ready, 5000));
	return pid;
}

/* Read what the server sends on a raw link until it closes it (within
 * timeout_ms): 1 when closed, 0 when it stayed open; *welcomed tells
 * whether a WELCOME came (the server took a HELLO). */
static int closed_without_welcome(int fd, int timeout_ms, int *welcomed)
{
	struct mp_wire_msg m;
	uint8_t d[64];
	int rc;

	*welcomed = 0;
	for (;;) {
		rc = rawauth_recv(fd, &m, d, timeout_ms, NULL, NULL);
		if (rc == -EPIPE)
			return 1;
		if (rc < 0)
			return rc == -EPROTO;
		if (m.op == MP_OP_WELCOME)
			*welcomed = 1;
	}
}

/* ---- tests -------------------------------------------------------------- */

/* A client that got the ticket from the manager talks over TCP; a
 * same-host client on the segment as before. */
static void test_ticket_holder_served(void)
{
	struct api_gate ready;
	struct echo_arg ea = {"d-echo", NULL, -1};
	struct cli_arg ca = {"d-echo", 20, 0}, cs = {"d-echo", 20, 1};
	pid_t srv, cli;

	api_gate_init(&ready);
	srv = start_echo(&ea, &ready);
	cli = api_fork(echo_client, &ca);
	CU_ASSERT(api_child_ok(cli, 10000));
	cli = api_fork(echo_client, &cs);
	CU_ASSERT(api_child_ok(cli, 10000));
	CU_ASSERT(echo_quit("d-echo") == 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	api_gate_close(&ready);
}

/*
 * Raw peers straight at the server's port: a HELLO without proof, a
 * proof under a wrong ticket, a recorded proof replayed, an oversized
 * frame before the proof - each refused, while a real client is served.
 */
static void test_raw_peers_refused(void)
{
	struct api_gate ready;
	struct echo_arg ea = {"d-raw", NULL, -1};
	struct cli_arg ca = {"d-raw", 200, 0};
	uint8_t ticket[MP_AUTH_NONCE], wrong[MP_AUTH_NONCE];
	uint8_t recorded[MP_AUTH_NONCE + MP_AUTH_MAC];
	struct mp_wire_msg m;
	int port, fd, welcomed, rc;
	uint64_t host;
	pid_t srv, cli;

	api_gate_init(&ready);
	srv = start_echo(&ea, &ready);
	port = rawauth_locate(api_mgr.port, "d-raw", ticket);
	CU_ASSERT_FATAL(port > 0);
	cli = api_fork(echo_client, &ca); /* served throughout */

	/* HELLO without proof: closed, never welcomed. */
	fd = mp_tcp_connect_local(port);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(rawauth_hello(fd, 1, "d-raw", "intrude") == 0);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_SEND;
	m.reqid = 2;
	m.data = "x";
	m.datalen = 1;
	(void)rawauth_send(fd, &m); /* may already be closed */
	CU_ASSERT(closed_without_welcome(fd, 3000, &welcomed));
	CU_ASSERT(!welcomed);
	close(fd);

	/* A proof under a wrong ticket: AUTH EACCES, closed. */
	for (size_t i = 0; i < sizeof(wrong); i++)
		wrong[i] = (uint8_t)(ticket[i] ^ 0x5a);
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(rawauth_prove(fd, wrong, NULL, NULL, NULL, NULL) == -EACCES);
	CU_ASSERT(closed_without_welcome(fd, 3000, &welcomed));
	close(fd);

	/* The right ticket: accepted, and the server proves it too; the
	 * proof is recorded. */
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(rawauth_prove(fd, ticket, NULL, recorded, NULL, NULL) == 0);
	CU_ASSERT(rawauth_hello(fd, 3, "d-raw", "honest") == 0);
	{
		uint8_t d[64];

		rc = rawauth_recv(fd, &m, d, 3000, NULL, NULL);
		CU_ASSERT(rc == 0 && m.op == MP_OP_WELCOME && m.a == 0);
	}
	close(fd);

	/* That recorded proof, replayed on a new connection: refused (the
	 * server's nonce differs). */
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(rawauth_prove(fd, ticket, recorded, NULL, NULL, NULL) ==
		  -EACCES);
	CU_ASSERT(closed_without_welcome(fd, 3000, &welcomed));
	CU_ASSERT(!welcomed);
	close(fd);

	/* A peer that claims to use the segment (HELLO u=host token, no
	 * proof) is welcomed, but may not send a request over TCP. */
	CU_ASSERT_FATAL(mp_host_token(&host) == 0);
	fd = mp_tcp_connect_local(port);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	m.reqid = 4;
	m.u = host;
	strcpy(m.name, "d-raw");
	strcpy(m.id, "claims");
	CU_ASSERT(rawauth_send(fd, &m) == 0);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_SEND;
	m.reqid = 5;
	m.data = "x";
	m.datalen = 1;
	CU_ASSERT(rawauth_send(fd, &m) == 0);
	{
		uint8_t d[64];
		int replied = 0;

		CU_ASSERT(rawauth_recv(fd, &m, d, 3000, NULL, NULL) == 0 &&
			  m.op == MP_OP_CHALLENGE);
		CU_ASSERT(rawauth_recv(fd, &m, d, 3000, NULL, NULL) == 0 &&
			  m.op == MP_OP_WELCOME && m.a == 0);
		while ((rc = rawauth_recv(fd, &m, d, 3000, NULL, NULL)) == 0)
			replied |= m.op == MP_OP_REPLY;
		CU_ASSERT(rc == -EPIPE);
		CU_ASSERT(!replied);
	}
	close(fd);

	/* A frame header announcing 1 MB before any proof: closed on the
	 * header (nothing is allocated for it). */
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(write(fd, "\x01\x15\0\0\0\0\0\x01\0\x10\0\0", 12) == 12);
	CU_ASSERT(closed_without_welcome(fd, 3000, &welcomed));
	close(fd);

	CU_ASSERT(api_child_ok(cli, 20000));
	CU_ASSERT(echo_quit("d-raw") == 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	api_gate_close(&ready);
}

/* A client the access policy denies gets EACCES from the manager, and
 * cannot reach the channel even knowing the server's port. */
static void denied_client(void *p)
{
	const char *name = p;
	messip_cnx_t *cnx;

	setenv("MESSIP_NO_SHM", "1", 1);
	cnx = api_connect("denied");
	CHILD_CHECK(cnx);
	errno = 0;
	CHILD_CHECK(messip_channel_connect(cnx, name, 2000) == NULL);
	CHILD_CHECK(errno == EACCES);
	messip_disconnect(cnx, 2000);
}

static void test_policy_denied_knows_port(void)
{
	struct api_gate ready;
	struct echo_arg ea = {"d-pol", NULL, -1};
	uint8_t guess[MP_AUTH_NONCE], unused[MP_AUTH_NONCE];
	int pfd[2], port = -1, fd, welcomed;
	pid_t srv, cli;

	CU_ASSERT_FATAL(pipe(pfd) == 0);
	api_keep[api_nkeep++] = pfd[1];
	ea.port_fd = pfd[1];
	api_gate_init(&ready);
	srv = start_echo(&ea, &ready);
	api_keep[--api_nkeep] = -1;
	close(pfd[1]);
	CU_ASSERT_FATAL(read(pfd[0], &port, sizeof(port)) == sizeof(port));
	close(pfd[0]);
	CU_ASSERT_FATAL(port > 0);

	/* The manager refuses the look-up (and hands out no ticket). */
	cli = api_fork(denied_client, "d-pol");
	CU_ASSERT(api_child_ok(cli, 10000));
	CU_ASSERT(rawauth_locate(api_mgr.port, "d-pol", unused) == -1);

	/* The port alone: no HELLO without proof, no guessed ticket. */
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(rawauth_hello(fd, 1, "d-pol", "denied") == 0);
	CU_ASSERT(closed_without_welcome(fd, 3000, &welcomed));
	CU_ASSERT(!welcomed);
	close(fd);
	CU_ASSERT(mp_auth_nonce(guess, sizeof(guess)) == 0);
	fd = mp_tcp_connect_local(port);
	CU_ASSERT(rawauth_prove(fd, guess, NULL, NULL, NULL, NULL) == -EACCES);
	close(fd);

	/* Nobody may connect to it, not even to say quit: kill it. */
	mp_test_kill(srv);
	api_gate_close(&ready);
}

/*
 * The client checks the server too: a fake server the manager advertises
 * (a raw registration creates the channel with its own address and
 * ticket) gets a valid proof from the client, but answers with a wrong
 * proof, then (second link) refuses: the client's send fails with EACCES
 * both times.
 */
struct fake_arg {
	const char *name;
};

static void fooled_client(void *p)
{
	struct fake_arg *a = p;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer;

	setenv("MESSIP_NO_SHM", "1", 1);
	cnx = api_connect("fooled");
	CHILD_CHECK(cnx);
	for (int round = 0; round < 2; round++) {
		ch = messip_channel_connect(cnx, a->name, 5000);
		CHILD_CHECK(ch);
		errno = 0;
		CHILD_CHECK(messip_send(ch, 1, "secret", 6, &answer, NULL, 0,
					5000) == -1);
		CHILD_CHECK(errno == EACCES);
		/* Sticky for this link: no second try behind our back. */
		errno = 0;
		CHILD_CHECK(messip_send(ch, 1, "secret", 6, &answer, NULL, 0,
					1000) == -1);
		CHILD_CHECK(errno == EACCES);
		messip_channel_disconnect(ch, 2000);
	}
	messip_disconnect(cnx, 2000);
}

/* Listen on a free loopback port: the fd, *port. */
static int listen_any(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 4) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static void test_client_checks_server(void)
{
	struct fake_arg fa = {"d-fake"};
	uint8_t ticket[MP_AUTH_NONCE], ns[MP_AUTH_NONCE], d[64];
	struct mp_auth_key key;
	struct mp_wire_msg m;
	int lfd, port = -1, mfd, fd;
	pid_t cli;

	lfd = listen_any(&port);
	CU_ASSERT_FATAL(lfd >= 0);
	CU_ASSERT_FATAL(mp_auth_nonce(ticket, sizeof(ticket)) == 0);
	CU_ASSERT_FATAL(mp_auth_key_set(&key, ticket, sizeof(ticket)) == 0);
	/* A raw registration creates the channel at our address. */
	mfd = mp_tcp_connect_local(api_mgr.port);
	CU_ASSERT_FATAL(mfd >= 0);
	CU_ASSERT(rawauth_hello(mfd, 1, "", "fake") == 0);
	CU_ASSERT(rawauth_recv(mfd, &m, d, 2000, NULL, NULL) == 0 &&
		  m.op == MP_OP_WELCOME && m.a == 0);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_CH_CREATE;
	m.reqid = 2;
	strcpy(m.name, fa.name);
	snprintf(m.addr, sizeof(m.addr), "127.0.0.1:%d", port);
	m.data = ticket;
	m.datalen = sizeof(ticket);
	CU_ASSERT(rawauth_send(mfd, &m) == 0);
	CU_ASSERT(rawauth_recv(mfd, &m, d, 2000, NULL, NULL) == 0 &&
		  m.op == MP_OP_RESULT && m.a == 0);

	cli = api_fork(fooled_client, &fa);
	for (int round = 0; round < 2; round++) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		uint8_t bogus[MP_AUTH_MAC];

		CU_ASSERT_FATAL(poll(&p, 1, 5000) == 1);
		fd = accept(lfd, NULL, NULL);
		CU_ASSERT_FATAL(fd >= 0);
		CU_ASSERT(mp_auth_nonce(ns, sizeof(ns)) == 0);
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_CHALLENGE;
		m.data = ns;
		m.datalen = sizeof(ns);
		CU_ASSERT(rawauth_send(fd, &m) == 0);
		CU_ASSERT(rawauth_recv(fd, &m, d, 5000, NULL, NULL) == 0);
		CU_ASSERT(m.op == MP_OP_AUTH &&
			  m.datalen == MP_AUTH_NONCE + MP_AUTH_MAC);
		/* The client proved the ticket the manager gave it. */
		CU_ASSERT(mp_auth_check(&key, MP_AUTH_CLIENT, ns, d,
					d + MP_AUTH_NONCE, MP_AUTH_MAC) == 0);
		memset(bogus, 0x42, sizeof(bogus));
		m.op = MP_OP_AUTH;
		m.a = round == 0 ? 0 : EACCES;
		m.data = bogus;
		m.datalen = round == 0 ? sizeof(bogus) : 0;
		CU_ASSERT(rawauth_send(fd, &m) == 0);
		/* Nothing else comes from the client: no HELLO, no SEND. */
		CU_ASSERT(rawauth_recv(fd, &m, d, 2000, NULL, NULL) == -EPIPE);
		close(fd);
	}
	CU_ASSERT(api_child_ok(cli, 15000));
	mp_auth_key_clear(&key);
	close(mfd);
	close(lfd);
}

static const struct mp_test_case tests[] = {
	{"ticket holder served over TCP, same-host client on the segment",
	 test_ticket_holder_served},
	{"raw peers: no proof, wrong ticket, replayed proof, request after a "
	 "segment claim, oversized frame refused while a client is served",
	 test_raw_peers_refused},
	{"client denied by the policy cannot reach the channel knowing its "
	 "port",
	 test_policy_denied_knows_port},
	{"client refuses a server that cannot prove the ticket",
	 test_client_checks_server},
	MP_TEST_END};

static void rm_policy(void)
{
	if (policy_path[0])
		unlink(policy_path);
}

int main(void)
{
	char conf[160];
	FILE *f;
	int fd, rc;

	mp_test_init("test_direct_auth", 120);
	api_verbose();
	snprintf(policy_path, sizeof(policy_path), "/tmp/mp-dpol-XXXXXX");
	fd = mkstemp(policy_path);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		perror("policy file");
		return 1;
	}
	mp_test_on_cleanup(rm_policy);
	fputs("deny any connect d-pol*\ndefault allow\n", f);
	fclose(f);
	snprintf(conf, sizeof(conf), "access_policy %s\n", policy_path);
	api_start_mgr(2, conf);
	rc = mp_test_main("direct_auth", tests);
	api_stop_mgr();
	rm_policy();
	return rc;
}
