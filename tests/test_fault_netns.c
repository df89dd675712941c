/*
 * test_fault_netns — half-open links between hosts (network namespaces
 * with their own /dev/shm, tests/mp_netns): a host that vanishes without
 * a FIN or a RST is noticed within the documented bound (README: 10 s, by
 * TCP keepalive and TCP_USER_TIMEOUT), and a short outage is survived.
 * The manager runs on host 0, servers on host 1, clients on host 2.
 *
 *   - the server's host cut off (link down): a client blocked in send on
 *     it gets ESRCH within 10 s, and the manager frees the server's name
 *     within the bound too;
 *   - the same with the server host's packets dropped by an nftables rule
 *     (needs the nft tool: skipped with a message otherwise);
 *   - the manager's host cut off: direct traffic between the other two
 *     goes on, calls that need the manager fail with ESHUTDOWN within the
 *     detection bound plus the grace period, the server is told once;
 *   - the client's host link down for 1.5 s, then back: no error, no
 *     DISMISSED, every message delivered in order.
 *
 * Covered elsewhere: the client's host cut off while blocked in send, and
 * DISMISSED for a killed client across hosts (test_api_netns).
 * Needs root and iproute2 (exit 77 otherwise).
 */
#include "config.h"

#include "mp_netns.h"
#include "test_fault_util.h"

#define PORT	 9200
#define BOUND_MS 10000 /* README: other host, within 10 s */
#define GRACE_MS 5000
#define HOST_MGR 0
#define HOST_SRV 1
#define HOST_CLI 2

static struct mp_netns net;
static char ref[64];
static pid_t mgr_pid;
static int have_nft;

static messip_cnx_t *host_connect(const char *id)
{
	for (int i = 0; i < 100; i++) {
		messip_cnx_t *cnx = messip_connect(ref, id, 1000);

		if (cnx)
			return cnx;
		api_sleep_ms(50);
	}
	return NULL;
}

static void conf_path(char *buf, size_t n)
{
	snprintf(buf, n, "/tmp/messip-test-%ld-fnetns.conf", (long)getpid());
}

static int start_manager(void)
{
	char conf[128];
	FILE *f;

	conf_path(conf, sizeof(conf));
	f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f,
		"listen %s:%d\nallow_remote yes\nstatus_listen off\n"
		"workers 2\nlog_level %s\n",
		net.addr[HOST_MGR], PORT,
		getenv("MP_TEST_VERBOSE") ? "debug" : "error");
	fclose(f);
	mgr_pid = mp_test_fork();
	if (mgr_pid == 0) {
		const char *bin = getenv("MP_MGR_BIN");

		if (!bin)
			bin = "./mgrd/messip-mgr";
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		if (mp_netns_enter(&net, HOST_MGR) < 0)
			_exit(126);
		execl(bin, bin, "-f", "-c", conf, (char *)NULL);
		_exit(127);
	}
	snprintf(ref, sizeof(ref), "%s:%d", net.addr[HOST_MGR], PORT);
	return mgr_pid > 0 ? 0 : -1;
}

/* Packets of host h dropped (on = 1) or let through again, by nftables
 * in its namespace: no RST, no ICMP, like a link that went dead. */
static int nft_drop(int h, int on)
{
	char cmd[512];

	if (on)
		snprintf(cmd, sizeof(cmd),
			 "ip netns exec %s nft -f - <<'EOF'\n"
			 "table inet mptdrop {\n"
			 " chain in { type filter hook input priority 0; "
			 "policy drop; }\n"
			 " chain out { type filter hook output priority 0; "
			 "policy drop; }\n"
			 "}\nEOF\n",
			 net.host[h]);
	else
		snprintf(cmd, sizeof(cmd),
			 "ip netns exec %s nft delete table inet mptdrop",
			 net.host[h]);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- servers and clients on their hosts --------------------------------- */

struct host_arg {
	int host;
	const char *name;
	struct api_gate *ready;
	struct api_gate *go;
	struct fault_slot *slot; /* [0]: the blocked call, [1]: the name */
	struct fault_srv_arg srv;
};

/* The self-checking server of test_fault_util, on a host. */
static void host_check_server(void *p)
{
	struct host_arg *a = p;

	CHILD_CHECK(mp_netns_enter(&net, a->host) == 0);
	a->srv.ref = ref;
	a->srv.name = a->name;
	a->srv.ready = a->ready;
	fault_check_server(&a->srv);
}

/* Holds the first request, then keeps receiving until killed. */
static void holding_server(void *p)
{
	struct host_arg *a = p;
	messip_cnx_t *cnx;
	messip_channel_t *ch;

	CHILD_CHECK(mp_netns_enter(&net, a->host) == 0);
	cnx = host_connect("holder");
	CHILD_CHECK(cnx);
	ch = messip_channel_create(cnx, a->name, 5000, 0);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	for (;;) {
		int32_t type;
		char buf[16];
		int r = messip_receive(ch, &type, buf, sizeof(buf), 1000);

		if (r >= 0)
			api_gate_signal(a->go); /* held, never answered */
	}
}

/* Blocks in send on the holder; then waits for its name to go. */
static void blocked_client(void *p)
{
	struct host_arg *a = p;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int32_t answer;
	int64_t end;
	int rc;

	CHILD_CHECK(mp_netns_enter(&net, a->host) == 0);
	cnx = host_connect("blocked");
	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	errno = 0;
	rc = messip_send(ch, 1, "?", 1, &answer, NULL, 0, MESSIP_NOTIMEOUT);
	fault_slot_set(&a->slot[0], rc, errno);
	end = api_now_ms() + BOUND_MS + 10000;
	while (api_now_ms() < end) {
		messip_channel_t *again;

		errno = 0;
		again = messip_channel_connect(cnx, a->name, 500);
		if (!again && errno == ENOENT) {
			fault_slot_set(&a->slot[1], 0, ENOENT);
			break;
		}
		if (again)
			messip_channel_disconnect(again, 0);
		api_sleep_ms(100);
	}
	CHILD_CHECK(a->slot[1].done);
}

/* ---- the server's host vanishes ----------------------------------------- */

static void server_host_cut(int by_nft)
{
	struct api_gate ready, held;
	struct fault_slot *slot = fault_slots(2);
	struct host_arg sa = {HOST_SRV, by_nft ? "n-nft" : "n-down",
			      &ready,	&held,
			      NULL,	{0}};
	struct host_arg ca = sa;
	pid_t srv, cli;
	int64_t t0, t_esrch, t_name;

	api_gate_init(&ready);
	api_gate_init(&held);
	srv = api_fork(holding_server, &sa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 20000));
	ca.host = HOST_CLI;
	ca.slot = slot;
	cli = api_fork(blocked_client, &ca);
	CU_ASSERT_FATAL(api_gate_wait(&held, 20000));
	api_sleep_ms(300); /* quiet links: only keepalive can tell */
	t0 = api_now_ms();
	CU_ASSERT_FATAL((by_nft ? nft_drop(HOST_SRV, 1)
				: mp_netns_link(&net, HOST_SRV, 0)) == 0);
	fault_slots_wait(slot, 2, BOUND_MS + 5000);
	t_esrch = slot[0].done ? slot[0].t_ms - t0 : -1;
	t_name = slot[1].done ? slot[1].t_ms - t0 : -1;
	fprintf(stderr,
		"  server host %s: client's send -1 errno %d after %lld ms, "
		"name freed after %lld ms\n",
		by_nft ? "dropped by nftables" : "link down", slot[0].err,
		(long long)t_esrch, (long long)t_name);
	CU_ASSERT_EQUAL(slot[0].rc, -1);
	CU_ASSERT_EQUAL(slot[0].err, ESRCH);
	CU_ASSERT(t_esrch >= 0 && t_esrch <= BOUND_MS);
	CU_ASSERT(t_name >= 0 && t_name <= BOUND_MS + 1000);
	CU_ASSERT(api_child_ok(cli, 5000));
	mp_test_kill(srv);
	if (by_nft)
		nft_drop(HOST_SRV, 0);
	else
		mp_netns_link(&net, HOST_SRV, 1);
	fault_slots_free(slot, 2);
	api_gate_close(&ready);
	api_gate_close(&held);
}

static void test_server_host_link_down(void)
{
	server_host_cut(0);
}

static void test_server_host_packets_dropped(void)
{
	if (!have_nft) {
		fprintf(stderr, "  SKIP: nft (nftables) is not installed; add "
				"nftables to .ci/deps\n");
		return;
	}
	server_host_cut(1);
}

/* ---- the manager's host vanishes ---------------------------------------- */

static void mgr_cut_client(void *p)
{
	struct host_arg *a = p;
	struct fault_srv_report rep;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int64_t t0, end;
	int rc, n = 0;

	CHILD_CHECK(mp_netns_enter(&net, a->host) == 0);
	cnx = host_connect("mgrcut");
	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	CHILD_CHECK(api_gate_wait(a->go, 20000));
	t0 = api_now_ms(); /* the manager's host was just cut off */
	/* Direct traffic does not need the manager. */
	end = t0 + 2000;
	while (api_now_ms() < end) {
		CHILD_CHECK(fault_echo_ok(ch, (uint32_t)n, 500, 3000));
		n++;
		api_sleep_ms(100);
	}
	errno = 0;
	rc = messip_buffered_send(ch, 0, "x", 1, 3 * BOUND_MS);
	fault_slot_set(&a->slot[0], rc, errno);
	a->slot[0].t_ms -= t0;
	CHILD_CHECK(fault_echo_ok(ch, (uint32_t)n, 500, 3000));
	CHILD_CHECK(fault_quit(ch, &rep) == 0);
	/* The server was told once (receive -1 ESHUTDOWN). */
	a->slot[1].rc = rep.errors;
	a->slot[1].err = rep.dismissed;
	a->slot[1].done = 1;
}

static void test_manager_host_cut(void)
{
	struct api_gate ready, go;
	struct fault_slot *slot = fault_slots(2);
	struct host_arg sa = {HOST_SRV, "n-mgrcut", &ready, NULL, NULL, {0}};
	struct host_arg ca = {HOST_CLI, "n-mgrcut", &ready, &go, slot, {0}};
	pid_t srv, cli;

	api_gate_init(&ready);
	api_gate_init(&go);
	srv = api_fork(host_check_server, &sa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 20000));
	cli = api_fork(mgr_cut_client, &ca);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 20000));
	CU_ASSERT_FATAL(mp_netns_link(&net, HOST_MGR, 0) == 0);
	api_gate_signal(&go);
	CU_ASSERT(api_child_ok(cli, BOUND_MS + GRACE_MS + 10000));
	fprintf(stderr,
		"  manager host cut off: direct traffic went on; buffered "
		"send -1 errno %d after %lld ms; server told %d time(s)\n",
		slot[0].err, (long long)slot[0].t_ms, slot[1].rc);
	CU_ASSERT_EQUAL(slot[0].rc, -1);
	CU_ASSERT_EQUAL(slot[0].err, ESHUTDOWN);
	CU_ASSERT(slot[0].t_ms <= BOUND_MS + GRACE_MS + 2000);
	CU_ASSERT_EQUAL(slot[1].rc, 1);
	CU_ASSERT_EQUAL(slot[1].err, 0);
	CU_ASSERT(api_child_ok(srv, 5000));
	mp_netns_link(&net, HOST_MGR, 1);
	fault_slots_free(slot, 2);
	api_gate_close(&ready);
	api_gate_close(&go);
}

/* ---- a short outage ----------------------------------------------------- */

#define FLAP_MS 1500

static void flap_client(void *p)
{
	struct host_arg *a = p;
	struct fault_srv_report rep;
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	int64_t end, worst = 0;
	uint32_t nb = 0, ns = 0;

	CHILD_CHECK(mp_netns_enter(&net, a->host) == 0);
	cnx = host_connect("flapper");
	CHILD_CHECK(cnx);
	ch = messip_channel_locate(cnx, a->name, 5000);
	CHILD_CHECK(ch);
	api_gate_signal(a->ready);
	CHILD_CHECK(api_gate_wait(a->go, 20000));
	end = api_now_ms() + FLAP_MS + 2500;
	while (api_now_ms() < end) {
		int64_t t = api_now_ms();

		CHILD_CHECK(fault_bsend_ok(ch, nb, 200));
		nb++;
		if (nb % 4 == 0) {
			CHILD_CHECK(fault_echo_ok(ch, ns, 300, 8000));
			ns++;
		}
		if (api_now_ms() - t > worst)
			worst = api_now_ms() - t;
		api_sleep_ms(50);
	}
	CHILD_CHECK(fault_quit(ch, &rep) == 0);
	fprintf(stderr,
		"  link down %d ms: %u buffered and %u sync sent, server got "
		"%d and %d, %d bad, %d DISMISSED; slowest call %lld ms\n",
		FLAP_MS, nb, ns, rep.buffered, rep.sync, rep.bad, rep.dismissed,
		(long long)worst);
	CHILD_CHECK(rep.buffered == (int32_t)nb && rep.sync == (int32_t)ns);
	CHILD_CHECK(rep.bad == 0 && rep.dismissed == 0 && rep.errors == 0);
	CHILD_CHECK(worst >= FLAP_MS / 2); /* the outage was felt */
	messip_disconnect(cnx, 2000);
}

static void test_client_link_flap(void)
{
	struct api_gate ready, go;
	struct host_arg sa = {HOST_SRV, "n-flap", &ready, NULL, NULL, {0}};
	struct host_arg ca = {HOST_CLI, "n-flap", &ready, &go, NULL, {0}};
	pid_t srv, cli;

	api_gate_init(&ready);
	api_gate_init(&go);
	srv = api_fork(host_check_server, &sa);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 20000));
	cli = api_fork(flap_client, &ca);
	CU_ASSERT_FATAL(api_gate_wait(&ready, 20000));
	api_gate_signal(&go);
	api_sleep_ms(500);
	CU_ASSERT_FATAL(mp_netns_link(&net, HOST_CLI, 0) == 0);
	api_sleep_ms(FLAP_MS);
	CU_ASSERT_FATAL(mp_netns_link(&net, HOST_CLI, 1) == 0);
	CU_ASSERT(api_child_ok(cli, 20000));
	CU_ASSERT(api_child_ok(srv, 5000));
	api_gate_close(&ready);
	api_gate_close(&go);
}

static const struct mp_test_case tests[] = {
	{"server's host link down: blocked client ESRCH within 10 s, name "
	 "freed",
	 test_server_host_link_down},
	{"server host's packets dropped (nftables): blocked client ESRCH "
	 "within 10 s, name freed",
	 test_server_host_packets_dropped},
	{"client's host link down for 1.5 s: nothing lost, no error, no "
	 "DISMISSED",
	 test_client_link_flap},
	{"manager's host cut off: direct traffic goes on, ESHUTDOWN within "
	 "the bound plus the grace",
	 test_manager_host_cut},
	MP_TEST_END};

/* Wait until the manager answers from a host. */
static void probe(void *arg)
{
	(void)arg;
	CHILD_CHECK(mp_netns_enter(&net, HOST_CLI) == 0);
	CHILD_CHECK(host_connect("probe") != NULL);
}

int main(void)
{
	char conf[128];
	int rc;

	mp_test_init("test_fault_netns", 90);
	api_verbose();
	if (!mp_netns_available())
		return 77;
	have_nft = system("nft --version >/dev/null 2>&1") == 0;
	if (!have_nft)
		fprintf(stderr, "test_fault_netns: nft not found: the nftables "
				"case will be skipped (add nftables to "
				".ci/deps)\n");
	if (mp_netns_setup(&net, 3) < 0)
		return 1;
	if (start_manager() < 0 || !api_child_ok(api_fork(probe, NULL), 10000))
		rc = 1;
	else
		rc = mp_test_main("fault_netns", tests);
	mp_netns_teardown(&net);
	conf_path(conf, sizeof(conf));
	unlink(conf);
	return rc;
}
