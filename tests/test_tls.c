/*
 * test_tls — TLS on the TCP links (issue 6, "optional TLS for links
 * between hosts"), against real managers and processes:
 *   - a throwaway CA, a server certificate (IP 127.0.0.1 and the netns
 *     addresses, DNS localhost) and a second, unrelated CA are made here
 *     with libcrypto, written under a mkdtemp directory and removed after;
 *   - messip-mgr -t refuses a key file open to others and a certificate
 *     without its key;
 *   - through a TLS manager: synchronous and buffered exchange;
 *   - the wrong CA: EACCES; a plaintext client: refused, and the manager
 *     goes on serving TLS clients; a TLS client to a plaintext manager:
 *     EPROTO;
 *   - the bytes on the wire (tests/mp_proxy between client and manager)
 *     carry a known payload without TLS, and do not with it;
 *   - TLS and the HMAC secret together (right secret works, wrong one is
 *     EACCES);
 *   - a direct client->server link over TLS between two network
 *     namespaces (root only; said and passed elsewhere).
 * Every process that uses TLS is a child that sets its environment before
 * its first connect: the library reads MESSIP_TLS_* once per process.
 */
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mp_netns.h"
#include "mp_proxy.h"
#include "test_fault_util.h"

#define PAYLOAD "tls-test-known-payload-7f3a91"
#define NS_PORT 19431

static char dir[64];
static char ca_file[128], wrong_ca_file[128], cert_file[128], key_file[128];
static char secret_file[128];
static char other_cert_file[128], other_key_file[128]; /* wrong CA's */
static struct mp_netns net;
static int net_up;
static int tcp_only; /* exchange(): MESSIP_NO_SHM in both processes */
static int big;	     /* exchange(): large messages too */

#define BIG_MAX	 65000 /* largest synchronous message (both ways) */
#define BIG_BUFD 6000  /* size of a buffered message in big mode */

/* ---- certificates ---------------------------------------------------- */

static void add_ext(X509 *x, X509V3_CTX *v, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v, nid, value);

	if (!e || X509_add_ext(x, e, -1) != 1)
		abort();
	X509_EXTENSION_free(e);
}

/* A certificate for key named cn, signed by (issuer, ikey), or
 * self-signed when issuer is NULL (then a CA). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
		       EVP_PKEY *ikey, const char *san)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509V3_CTX v;
	X509_NAME *n;

	if (!x)
		abort();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	X509V3_set_ctx_nodb(&v);
	X509V3_set_ctx(&v, issuer ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &v, NID_subject_key_identifier, "hash");
	if (!issuer) {
		add_ext(x, &v, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, &v, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, &v, NID_authority_key_identifier, "keyid:always");
		add_ext(x, &v, NID_basic_constraints, "CA:FALSE");
		add_ext(x, &v, NID_ext_key_usage, "serverAuth");
		add_ext(x, &v, NID_subject_alt_name, san);
	}
	if (!X509_sign(x, issuer ? ikey : key, EVP_sha256()))
		abort();
	return x;
}

static void write_cert(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	if (!f || PEM_write_X509(f, x) != 1)
		abort();
	fclose(f);
}

static void write_key(const char *path, EVP_PKEY *k, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (!f ||
	    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1)
		abort();
	fchmod(fd, mode);
	fclose(f);
}

static void make_pki(void)
{
	EVP_PKEY *cak = EVP_EC_gen("P-256"), *srvk = EVP_EC_gen("P-256");
	EVP_PKEY *wrongk = EVP_EC_gen("P-256"), *otherk = EVP_EC_gen("P-256");
	X509 *ca, *srv, *wrong, *other;
	char san[256];
	int fd;

	if (!cak || !srvk || !wrongk || !otherk)
		abort();
	snprintf(san, sizeof(san), "IP:127.0.0.1,DNS:localhost");
	for (int i = 0; net_up && i < net.nhosts; i++) {
		size_t l = strlen(san);

		snprintf(san + l, sizeof(san) - l, ",IP:%s", net.addr[i]);
	}
	ca = make_cert(cak, "messip test CA", NULL, NULL, NULL);
	srv = make_cert(srvk, "messip test server", ca, cak, san);
	wrong = make_cert(wrongk, "some other CA", NULL, NULL, NULL);
	other = make_cert(otherk, "impostor", wrong, wrongk, san);
	write_cert(ca_file, ca);
	write_cert(cert_file, srv);
	write_cert(wrong_ca_file, wrong);
	write_key(key_file, srvk, 0600);
	write_cert(other_cert_file, other);
	write_key(other_key_file, otherk, 0600);
	fd = open(secret_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, "tls-test-secret-0123456789abcdef", 32) != 32)
		abort();
	close(fd);
	X509_free(ca);
	X509_free(srv);
	X509_free(wrong);
	X509_free(other);
	EVP_PKEY_free(otherk);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(srvk);
	EVP_PKEY_free(wrongk);
}

static void cleanup_files(void)
{
	char p[160];

	unlink(ca_file);
	unlink(wrong_ca_file);
	unlink(cert_file);
	unlink(key_file);
	unlink(secret_file);
	unlink(other_cert_file);
	unlink(other_key_file);
	snprintf(p, sizeof(p), "%s/run.conf", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/open.key", dir);
	unlink(p);
	rmdir(dir);
}

static void cleanup_net(void)
{
	if (net_up)
		mp_netns_teardown(&net);
	net_up = 0;
}

/* The manager's TLS lines (and more, if extra is not NULL). */
static const char *tls_conf(const char *extra)
{
	static char conf[768];

	snprintf(conf, sizeof(conf), "tls_cert_file %s\ntls_key_file %s\n%s",
		 cert_file, key_file, extra ? extra : "");
	return conf;
}

/* In a child: the TLS environment of a client (ca may be NULL: plain)
 * and, with srv, of a server too. */
static void child_env(const char *ca, int srv)
{
	if (ca)
		setenv("MESSIP_TLS_CA", ca, 1);
	else
		unsetenv("MESSIP_TLS_CA");
	if (srv) {
		setenv("MESSIP_TLS_CERT", cert_file, 1);
		setenv("MESSIP_TLS_KEY", key_file, 1);
	} else {
		unsetenv("MESSIP_TLS_CERT");
		unsetenv("MESSIP_TLS_KEY");
	}
}

/* ---- processes --------------------------------------------------------- */

struct peer_arg {
	const char *ref;  /* manager */
	const char *name; /* channel */
	const char *ca;
	int nbuf;	  /* buffered messages the client sends */
	int expect_errno; /* client: connect must fail with this (0: work) */
	int ns_host;	  /* network namespace host, -1: none */
	int tcp_only;	  /* MESSIP_NO_SHM: direct links over TCP */
	const char *srv_cert, *srv_key; /* odd_direct_server's */
	int big;			/* large messages (the global) */
};

static messip_cnx_t *connect_retry(const char *ref, const char *id)
{
	for (int i = 0; i < 100; i++) {
		messip_cnx_t *cnx = messip_connect(ref, id, 2000);

		if (cnx || errno == EACCES || errno == EPROTO)
			return cnx;
		api_sleep_ms(50);
	}
	return NULL;
}

/* Echo server: answers type + 1; counts buffered messages (their data
 * must be PAYLOAD); ends once it had a synchronous type 99 and nbuf
 * buffered ones. */
static void echo_server(void *p)
{
	const struct peer_arg *a = p;
	static char buf[BIG_MAX + 16];
	messip_channel_t *ch;
	messip_cnx_t *cnx;
	int got = 0, ended = 0;
	int64_t end = api_now_ms() + 30000;

	if (a->ns_host >= 0)
		CHILD_CHECK(mp_netns_enter(&net, a->ns_host) == 0);
	child_env(a->ca, a->ca != NULL);
	if (a->tcp_only)
		setenv("MESSIP_NO_SHM", "1", 1);
	api_verbose();
	cnx = connect_retry(a->ref, "tls-srv");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	for (;;) {
		int32_t type = 0;
		int idx = messip_receive(ch, &type, buf, sizeof(buf), 1000);

		CHILD_CHECK(api_now_ms() < end);
		if (idx == MESSIP_MSG_NOREPLY && a->big &&
		    ch->datalenr == BIG_BUFD) {
			for (int k = 0; k < BIG_BUFD; k++)
				CHILD_CHECK(buf[k] == buf[0]);
			got++;
		} else if (idx == MESSIP_MSG_NOREPLY) {
			CHILD_CHECK(strcmp(buf, PAYLOAD) == 0);
			got++;
		} else if (idx >= 0) {
			CHILD_CHECK(messip_reply(ch, idx, type + 1, buf,
						 ch->datalenr, 5000) == 0);
			ended |= type == 99;
		}
		/* Buffered messages may come after the last synchronous
		 * one: they take another path. */
		if (ended && got >= a->nbuf)
			break;
	}
	CHILD_CHECK(got == a->nbuf);
	messip_disconnect(cnx, 2000);
}

/* Client: synchronous echoes and nbuf buffered sends of PAYLOAD, then
 * the closing 99; or, with expect_errno, a connect that must fail so. */
static void client(void *p)
{
	const struct peer_arg *a = p;
	messip_channel_t *ch = NULL;
	messip_cnx_t *cnx;
	char reply[256];
	int32_t answer = 0;

	if (a->ns_host >= 0)
		CHILD_CHECK(mp_netns_enter(&net, a->ns_host) == 0);
	child_env(a->ca, 0);
	if (a->tcp_only)
		setenv("MESSIP_NO_SHM", "1", 1);
	api_verbose();
	errno = 0;
	cnx = a->expect_errno ? messip_connect(a->ref, "tls-cli", 5000)
			      : connect_retry(a->ref, "tls-cli");
	if (a->expect_errno) {
		CHILD_CHECK(cnx == NULL);
		CHILD_CHECK(errno == a->expect_errno);
		return;
	}
	CHILD_CHECK(cnx);
	for (int i = 0; i < 100 && !ch; i++) {
		ch = messip_channel_connect(cnx, a->name, 2000);
		if (!ch)
			api_sleep_ms(50);
	}
	CHILD_CHECK(ch);
	for (int i = 0; i < 20; i++) {
		CHILD_CHECK(messip_send(ch, i, PAYLOAD, sizeof(PAYLOAD),
					&answer, reply, sizeof(reply),
					5000) == 0);
		CHILD_CHECK(answer == i + 1);
		CHILD_CHECK(strcmp(reply, PAYLOAD) == 0);
	}
	/* Large ones: many TLS records each, both ways; their bytes
	 * checked one by one. */
	for (int i = 0; a->big && i < 24; i++) {
		static char out[BIG_MAX], back[BIG_MAX];
		int len = 1 + (i * 7919 + 40000) % BIG_MAX;

		for (int k = 0; k < len; k++)
			out[k] = (char)(i * 31 + k);
		CHILD_CHECK(messip_send(ch, 1000 + i, out, len, &answer, back,
					sizeof(back), 10000) == 0);
		CHILD_CHECK(answer == 1001 + i);
		CHILD_CHECK((int)ch->datalenr == len);
		CHILD_CHECK(memcmp(out, back, (size_t)len) == 0);
	}
	for (int i = 0; i < a->nbuf; i++) {
		static char out[BIG_BUFD];

		memset(out, 'a' + i % 26, sizeof(out));
		if (a->big)
			CHILD_CHECK(messip_buffered_send(ch, 7, out,
							 sizeof(out),
							 5000) >= 0);
		else
			CHILD_CHECK(messip_buffered_send(ch, 7, PAYLOAD,
							 sizeof(PAYLOAD),
							 5000) >= 0);
	}
	CHILD_CHECK(messip_send(ch, 99, "end", 4, &answer, reply,
				sizeof(reply), 5000) == 0);
	CHILD_CHECK(answer == 100);
	messip_disconnect(cnx, 2000);
}

/* A server and a client through manager ref; both must succeed. */
static int exchange(const char *ref, const char *name, const char *ca,
		    int nbuf)
{
	struct peer_arg a = {.ref = ref, .name = name, .ca = ca,
			     .nbuf = nbuf, .ns_host = -1,
			     .tcp_only = tcp_only, .big = big};
	pid_t s = api_fork(echo_server, &a), c = api_fork(client, &a);
	int ok_c = api_child_ok(c, 30000), ok_s = api_child_ok(s, 30000);

	return ok_c && ok_s;
}

/* A client whose connect must fail with err. */
static int refused(const char *ref, const char *ca, int err)
{
	struct peer_arg a = {.ref = ref, .ca = ca, .expect_errno = err,
			     .ns_host = -1};

	return api_child_ok(api_fork(client, &a), 20000);
}

/* A server without a certificate, or (srv_cert) with one from another CA;
 * its manager link is TLS.  A TLS client over TCP: its first send fails
 * with EPROTO, or EACCES. */
static void odd_direct_server(void *p)
{
	const struct peer_arg *a = p;
	messip_channel_t *ch;
	messip_cnx_t *cnx;
	char buf[64];

	child_env(a->ca, 0);
	if (a->srv_cert) {
		setenv("MESSIP_TLS_CERT", a->srv_cert, 1);
		setenv("MESSIP_TLS_KEY", a->srv_key, 1);
	}
	cnx = connect_retry(a->ref, "tls-plainsrv");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	for (int i = 0; i < 50; i++) {
		int32_t type;

		messip_receive(ch, &type, buf, sizeof(buf), 100);
	}
	messip_disconnect(cnx, 2000);
}

static void direct_refused_client(void *p)
{
	const struct peer_arg *a = p;
	messip_channel_t *ch = NULL;
	messip_cnx_t *cnx;
	int32_t answer;
	char reply[16];

	child_env(a->ca, 0);
	setenv("MESSIP_NO_SHM", "1", 1);
	cnx = connect_retry(a->ref, "tls-cli2");
	CHILD_CHECK(cnx);
	for (int i = 0; i < 100 && !ch; i++) {
		ch = messip_channel_connect(cnx, a->name, 2000);
		if (!ch)
			api_sleep_ms(50);
	}
	errno = 0;
	if (ch)
		CHILD_CHECK(messip_send(ch, 1, "x", 2, &answer, reply,
					sizeof(reply), 3000) < 0);
	CHILD_CHECK(errno == a->expect_errno);
	messip_disconnect(cnx, 2000);
}

static int direct_refused(const char *ref, const char *cert,
			  const char *key, int err)
{
	struct peer_arg a = {.ref = ref, .name = "tls.oddsrv", .ca = ca_file,
			     .ns_host = -1, .srv_cert = cert, .srv_key = key,
			     .expect_errno = err};
	pid_t s = api_fork(odd_direct_server, &a);
	pid_t c = api_fork(direct_refused_client, &a);
	int ok_c = api_child_ok(c, 20000), ok_s = api_child_ok(s, 20000);

	return ok_c && ok_s;
}

/* ---- the manager's configuration -------------------------------------- */

static void test_config_checks(void)
{
	char out[1024], conf[512], open_key[160];
	int fd, n;
	char buf[4096];

	CU_ASSERT(mp_mgrproc_run(tls_conf(NULL), "-t", out, sizeof(out)) ==
		  0);
	/* A certificate without its key: file:line. */
	snprintf(conf, sizeof(conf), "tls_cert_file %s\n", cert_file);
	CU_ASSERT(mp_mgrproc_run(conf, "-t", out, sizeof(out)) != 0);
	CU_ASSERT(strstr(out, "run.conf:1") != NULL);
	CU_ASSERT(strstr(out, "tls_key_file") != NULL);
	/* A key readable by others: refused, says chmod 600. */
	snprintf(open_key, sizeof(open_key), "%s/open.key", dir);
	fd = open(key_file, O_RDONLY);
	CU_ASSERT_FATAL(fd >= 0);
	n = (int)read(fd, buf, sizeof(buf));
	close(fd);
	fd = open(open_key, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CU_ASSERT_FATAL(fd >= 0 && n > 0);
	CU_ASSERT(write(fd, buf, (size_t)n) == n);
	fchmod(fd, 0644);
	close(fd);
	snprintf(conf, sizeof(conf), "tls_cert_file %s\ntls_key_file %s\n",
		 cert_file, open_key);
	CU_ASSERT(mp_mgrproc_run(conf, "-t", out, sizeof(out)) != 0);
	CU_ASSERT(strstr(out, "chmod 600") != NULL);
	/* The CA as the key: not a key. */
	snprintf(conf, sizeof(conf), "tls_cert_file %s\ntls_key_file %s\n",
		 cert_file, ca_file);
	chmod(ca_file, 0600);
	CU_ASSERT(mp_mgrproc_run(conf, "-t", out, sizeof(out)) != 0);
	CU_ASSERT(strstr(out, "private key") != NULL);
	chmod(ca_file, 0644);
	unlink(open_key);
}

/* ---- the manager link --------------------------------------------------- */

static void test_exchange(void)
{
	api_start_mgr(2, tls_conf(NULL));
	CU_ASSERT(exchange(api_mgr.ref, "tls.echo", ca_file, 50));
	big = 1;
	CU_ASSERT(exchange(api_mgr.ref, "tls.echo-big", ca_file, 300));
	big = 0;
	/* By name: the certificate names localhost too. */
	{
		char ref[64];

		snprintf(ref, sizeof(ref), "localhost:%d", api_mgr.port);
		CU_ASSERT(exchange(ref, "tls.echo2", ca_file, 5));
	}
	api_stop_mgr();
}

static void test_wrong_ca(void)
{
	api_start_mgr(1, tls_conf(NULL));
	CU_ASSERT(refused(api_mgr.ref, wrong_ca_file, EACCES));
	/* The manager goes on serving the right clients. */
	CU_ASSERT(exchange(api_mgr.ref, "tls.after-wrong", ca_file, 3));
	api_stop_mgr();
}

static void test_plaintext_client(void)
{
	struct peer_arg a = {.ns_host = -1};
	int st;
	pid_t pid;

	api_start_mgr(1, tls_conf(NULL));
	/* Whatever the plaintext client reads back is not a WELCOME: its
	 * connect fails (and does not hang past its timeout). */
	a.ref = api_mgr.ref;
	a.expect_errno = -1;
	pid = mp_test_fork();
	if (pid == 0) {
		messip_cnx_t *cnx;
		int64_t t0 = api_now_ms();

		child_env(NULL, 0);
		cnx = messip_connect(a.ref, "plain", 3000);
		CHILD_CHECK(cnx == NULL);
		CHILD_CHECK(errno == EPROTO || errno == ECONNREFUSED ||
			    errno == ETIMEDOUT);
		CHILD_CHECK(api_now_ms() - t0 < 4000);
		_exit(0);
	}
	st = mp_test_wait(pid, 10000);
	CU_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CU_ASSERT(exchange(api_mgr.ref, "tls.after-plain", ca_file, 3));
	api_stop_mgr();
}

static void test_tls_client_plain_manager(void)
{
	api_start_mgr(1, NULL);
	CU_ASSERT(refused(api_mgr.ref, ca_file, EPROTO));
	api_stop_mgr();
}

/* The payload crosses the proxy in clear without TLS (the control: the
 * watch works), never with it. */
static void test_wire_not_plaintext(void)
{
	struct mp_proxy_knobs k;
	struct mp_proxy_stats st;
	struct mp_proxy px;

	memset(&k, 0, sizeof(k));
	snprintf(k.watch, sizeof(k.watch), "%s", PAYLOAD);
	/* Without TLS the proxy rewrites CH_INFO: the direct link goes
	 * through it too, over TCP.  (With TLS it cannot read CH_INFO: the
	 * direct link is then tested by test_direct_loopback.) */
	k.rewrite_info = 1;

	api_start_mgr(1, NULL);
	CU_ASSERT_FATAL(mp_proxy_start(&px, api_mgr.port, &k) == 0);
	mp_proxy_set(&px, MP_PROXY_DIRECT, &k);
	CU_ASSERT(exchange(px.ref, "tls.wire-plain", NULL, 20));
	mp_proxy_stats(&px, &st);
	CU_ASSERT(st.watch_hits[MP_PROXY_MGR] > 0);
	CU_ASSERT(st.watch_hits[MP_PROXY_DIRECT] > 0);
	mp_proxy_stop(&px);
	api_stop_mgr();

	api_start_mgr(1, tls_conf(NULL));
	CU_ASSERT_FATAL(mp_proxy_start(&px, api_mgr.port, &k) == 0);
	CU_ASSERT(exchange(px.ref, "tls.wire", ca_file, 20));
	mp_proxy_stats(&px, &st);
	CU_ASSERT(st.bytes[MP_PROXY_MGR][MP_PROXY_FWD] > 20 * 30);
	CU_ASSERT(st.watch_hits[MP_PROXY_MGR] == 0);
	CU_ASSERT(st.rewrites == 0);
	mp_proxy_stop(&px);
	api_stop_mgr();
}

/* Same host, but over TCP (MESSIP_NO_SHM): the direct client -> server
 * link is TLS; a server without a certificate is refused by a TLS
 * client (EPROTO), one whose certificate is from another CA too
 * (EACCES). */
static void test_direct_loopback(void)
{
	api_start_mgr(1, tls_conf(NULL));
	tcp_only = 1;
	CU_ASSERT(exchange(api_mgr.ref, "tls.direct", ca_file, 20));
	big = 1;
	CU_ASSERT(exchange(api_mgr.ref, "tls.direct-big", ca_file, 200));
	big = 0;
	tcp_only = 0;
	CU_ASSERT(direct_refused(api_mgr.ref, NULL, NULL, EPROTO));
	CU_ASSERT(direct_refused(api_mgr.ref, other_cert_file, other_key_file,
				 EACCES));
	api_stop_mgr();
}

static void test_tls_and_secret(void)
{
	char extra[256];

	snprintf(extra, sizeof(extra), "auth_secret_file %s\n", secret_file);
	api_start_mgr(1, tls_conf(extra));
	setenv("MESSIP_SECRET_FILE", secret_file, 1);
	CU_ASSERT(exchange(api_mgr.ref, "tls.secret", ca_file, 5));
	/* The secret is still checked under TLS. */
	setenv("MESSIP_SECRET_FILE", key_file, 1); /* the wrong secret */
	CU_ASSERT(refused(api_mgr.ref, ca_file, EACCES));
	unsetenv("MESSIP_SECRET_FILE");
	api_stop_mgr();
}

/* The manager's workers die: a TLS registration resumes on a new TLS
 * link (the library's non-blocking reconnect, handshake included). */
static void resume_child(void *p)
{
	const struct peer_arg *a = p;
	messip_cnx_t *srv, *cli;
	messip_channel_t *ch;

	child_env(ca_file, 0);
	srv = connect_retry(a->ref, "tls-resumer");
	CHILD_CHECK(srv);
	ch = messip_channel_create(srv, "tls.resume", 2000, 0);
	CHILD_CHECK(ch);
	/* The parent kills the workers now. */
	kill(getppid(), SIGUSR1);
	api_sleep_ms(800);
	CHILD_CHECK(messip_channel_create(srv, "tls.resume2", 5000, 0));
	cli = connect_retry(a->ref, "tls-checker");
	CHILD_CHECK(cli);
	/* The first channel survived: resumed, not registered anew. */
	CHILD_CHECK(messip_channel_connect(cli, "tls.resume", 2000));
	messip_disconnect(cli, 2000);
	messip_disconnect(srv, 2000);
}

static volatile sig_atomic_t usr1;

static void on_usr1(int sig)
{
	(void)sig;
	usr1 = 1;
}

static void test_resume(void)
{
	struct peer_arg a = {.ns_host = -1};
	pid_t kids[16], c;
	int n = 0;

	api_start_mgr(2, tls_conf(NULL));
	a.ref = api_mgr.ref;
	usr1 = 0;
	signal(SIGUSR1, on_usr1);
	c = api_fork(resume_child, &a);
	for (int i = 0; i < 200 && !usr1; i++)
		api_sleep_ms(25);
	CU_ASSERT(usr1);
	n = fault_children_of(api_mgr.pid, kids, 16);
	CU_ASSERT(n >= 2);
	for (int i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	CU_ASSERT(api_child_ok(c, 20000));
	signal(SIGUSR1, SIG_DFL);
	api_stop_mgr();
}

/* ---- a direct link between hosts -------------------------------------- */

static int enter_host0(const void *arg)
{
	(void)arg;
	return mp_netns_enter(&net, 0);
}

static void test_direct_netns(void)
{
	char conf[512], ref[64];
	struct peer_arg s = {.ns_host = 1, .nbuf = 10, .tcp_only = 1};
	struct peer_arg c = {.ns_host = 2, .nbuf = 10, .tcp_only = 1};
	pid_t mgr, ps, pc;
	int ok_c, ok_s;
	FILE *f;

	if (!net_up) {
		fprintf(stderr, "  network namespaces unavailable (needs root):"
				" not run\n");
		return;
	}
	snprintf(conf, sizeof(conf), "%s/run.conf", dir);
	f = fopen(conf, "w");
	CU_ASSERT_FATAL(f != NULL);
	fprintf(f,
		"listen %s:%d\nallow_remote yes\nstatus_listen off\n"
		"workers 1\nlog_level %s\ntls_cert_file %s\ntls_key_file %s\n",
		net.addr[0], NS_PORT,
		getenv("MP_TEST_VERBOSE") ? "debug" : "warning", cert_file,
		key_file);
	fclose(f);
	mgr = mp_mgrproc_exec(conf, enter_host0, NULL);
	CU_ASSERT_FATAL(mgr > 0);
	snprintf(ref, sizeof(ref), "%s:%d", net.addr[0], NS_PORT);
	s.ref = c.ref = ref;
	s.name = c.name = "tls.hosts";
	s.ca = c.ca = ca_file;
	ps = api_fork(echo_server, &s);
	pc = api_fork(client, &c);
	ok_c = api_child_ok(pc, 40000);
	ok_s = api_child_ok(ps, 40000);
	CU_ASSERT(ok_c && ok_s);
	kill(mgr, SIGTERM);
	if (mp_test_wait(mgr, 5000) == -1)
		mp_test_kill(mgr);
	unlink(conf);
}

static const struct mp_test_case tests[] = {
	{"manager config: tls keys checked by -t", test_config_checks},
	{"TLS manager: sync and buffered exchange", test_exchange},
	{"wrong CA: EACCES, manager keeps serving", test_wrong_ca},
	{"plaintext client to TLS manager: refused, manager keeps serving",
	 test_plaintext_client},
	{"TLS client to plaintext manager: EPROTO",
	 test_tls_client_plain_manager},
	{"bytes on the wire: payload in clear without TLS, not with it",
	 test_wire_not_plaintext},
	{"direct link over TLS on loopback; plain server: EPROTO; server of "
	 "another CA: EACCES",
	 test_direct_loopback},
	{"TLS and the HMAC secret together", test_tls_and_secret},
	{"workers killed: a TLS registration resumes over TLS", test_resume},
	{"direct link between two network namespaces over TLS",
	 test_direct_netns},
	MP_TEST_END,
};

int main(void)
{
	char tmpl[] = "/tmp/messip-tls-XXXXXX";
	int rc;

	mp_test_init("test_tls", 170);
	api_verbose();
	if (!mkdtemp(tmpl))
		return 1;
	snprintf(dir, sizeof(dir), "%s", tmpl);
	snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", dir);
	snprintf(wrong_ca_file, sizeof(wrong_ca_file), "%s/wrong-ca.pem", dir);
	snprintf(cert_file, sizeof(cert_file), "%s/server.pem", dir);
	snprintf(key_file, sizeof(key_file), "%s/server.key", dir);
	snprintf(secret_file, sizeof(secret_file), "%s/secret", dir);
	snprintf(other_cert_file, sizeof(other_cert_file), "%s/other.pem", dir);
	snprintf(other_key_file, sizeof(other_key_file), "%s/other.key", dir);
	mp_test_on_cleanup(cleanup_files);
	if (getenv("MP_TEST_NO_NETNS") == NULL && mp_netns_available() &&
	    mp_netns_setup(&net, 3) == 0) {
		net_up = 1;
		mp_test_on_cleanup(cleanup_net);
	}
	make_pki();
	rc = mp_test_main("tls", tests);
	cleanup_net();
	cleanup_files();
	return rc;
}
