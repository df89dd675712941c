/*
 * test_mgr_proc — the manager as a set of processes: workers in the
 * process list, a worker killed with SIGKILL (restarted within 1 s, its
 * registrations resumed or, after the grace period, ended), kill -9 of
 * workers under buffered load with an exact delivery count, the master
 * killed (workers gone within 1 s, no /dev/shm object left), a second
 * manager on the same port, a stale segment, SIGHUP good and bad, SIGTERM
 * (workers stopped first: none reports its master gone).  Across a worker's
 * death: a BSEND re-sent with its request id is not queued twice, an
 * unacknowledged EVENT is sent again with its number.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mp_mgrproc.h"
#include "mp_shm.h"
#include "mp_test.h"
#include "mp_time.h"
#include "test_mgr_cli.h"

#define EV_DISMISSED (-3)
#define MAX_KIDS     16

static struct mp_mgrproc mgr;

static int64_t ms_since(int64_t t0)
{
	return (mp_time_now_ns() - t0) / 1000000;
}

/* Children of pid named messip-mgr, from /proc.  Returns the count. */
static int children_of(pid_t parent, pid_t *out, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[512], *rp;
		long ppid;
		char state;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(buf, sizeof(buf), f)) {
			fclose(f);
			continue;
		}
		fclose(f);
		/* pid (comm) state ppid ... ; comm may hold spaces */
		rp = strrchr(buf, ')');
		if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2)
			continue;
		if (ppid != parent || state == 'Z' ||
		    !strstr(buf, "(messip-mgr)"))
			continue;
		if (n < max)
			out[n] = (pid_t)atol(de->d_name);
		n++;
	}
	closedir(d);
	return n;
}

static int shm_exists(int port)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/shm/messip-mgr-%d", port);
	return access(path, F_OK) == 0;
}

/* Wait until the master has n live workers none of which is in old[]
 * (old may be NULL).  Returns ms waited, or -1. */
static int wait_workers(pid_t master, int n, const pid_t *old, int nold,
			int timeout_ms)
{
	int64_t t0 = mp_time_now_ns();

	while (ms_since(t0) <= timeout_ms) {
		pid_t kids[MAX_KIDS];
		int k = children_of(master, kids, MAX_KIDS), fresh = 0;

		for (int i = 0; i < k && i < MAX_KIDS; i++) {
			int seen = 0;

			for (int j = 0; j < nold; j++)
				if (old && old[j] == kids[i])
					seen = 1;
			fresh += !seen;
		}
		if (k == n && (old == NULL || fresh >= 1))
			return (int)ms_since(t0);
		usleep(5000);
	}
	return -1;
}

/* (Re)register with a resume token, retrying while the manager restarts
 * a worker.  Request ids go on growing, as a library's do (the manager
 * takes a BSEND whose id is not above the last one queued for a re-sent
 * one).  Returns the WELCOME status or a transport error. */
static int resume(struct tcli *c, const char *id, int timeout_ms)
{
	int64_t t0 = mp_time_now_ns();
	uint64_t token = c->token;
	uint32_t next = c->next_reqid;
	int32_t regno = c->regno;
	int rc;

	do {
		tcli_close(c);
		rc = tcli_hello(c, mgr.port, id, token);
		if (rc >= 0)
			break;
		usleep(20000);
	} while (ms_since(t0) < timeout_ms);
	if (c->next_reqid < next)
		c->next_reqid = next + 1;
	if (rc == 0 && c->regno != regno)
		return -EBADMSG;
	return rc;
}

/* BSEND with a request id chosen by the caller (so that it can be sent
 * again after a resume, as the library does).  The RESULT's status (and
 * *queued its b), or < 0 when the connection broke. */
static int bsend_id(struct tcli *c, uint32_t reqid, int32_t h, int32_t type,
		    const void *d, uint32_t len, int32_t *queued)
{
	struct mp_wire_msg m = { .op = MP_OP_BSEND };
	struct tcli_msg *t = NULL;
	int rc;

	m.reqid = reqid;
	m.b = h;
	m.a = type;
	m.c = -1;
	m.data = d;
	m.datalen = len;
	rc = tcli_call(c, &m, &t, 10000);
	if (rc < 0)
		return rc;
	rc = t->m.op == MP_OP_RESULT ? t->m.a : -EPROTO;
	if (queued)
		*queued = t->m.b;
	tcli_msg_free(t);
	return rc;
}

/* ---- process list, restart, resume ---------------------------------------- */

static void test_worker_count(void)
{
	pid_t kids[MAX_KIDS];

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 3, NULL) == 0);
	CU_ASSERT(wait_workers(mgr.pid, 3, NULL, 0, 2000) >= 0);
	CU_ASSERT(children_of(mgr.pid, kids, MAX_KIDS) == 3);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
	CU_ASSERT(!shm_exists(mgr.port));
}

static void test_worker_restart_resume(void)
{
	struct tcli srv, cli;
	pid_t kids[MAX_KIDS];
	int32_t h, n;
	int ms;

	/* One worker: killing it breaks every connection. */
	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "keep", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "keep", -2, NULL, 3000) == 0);
	for (int i = 0; i < 5; i++)
		CU_ASSERT(tcli_bsend(&cli, h, i, "q", 1, 0, NULL, 3000) == 0);
	/* Receive two, acknowledge one: the rest must come again. */
	for (int i = 0; i < 2; i++) {
		struct tcli_msg *t = NULL;

		CU_ASSERT_FATAL(tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 3000) ==
				0);
		CU_ASSERT(t->m.a == i);
		if (i == 0)
			tcli_back(&srv, h, t->m.u);
		tcli_msg_free(t);
	}
	usleep(100000);

	CU_ASSERT_FATAL(wait_workers(mgr.pid, 1, NULL, 0, 2000) >= 0);
	CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) == 1);
	kill(kids[0], SIGKILL);
	ms = wait_workers(mgr.pid, 1, kids, 1, 2000);
	CU_ASSERT(ms >= 0 && ms < 1000);
	fprintf(stderr, "worker restarted after %d ms\n", ms);

	/* Both find their connection gone and resume. */
	CU_ASSERT(tcli_ping(&srv) < 0);
	CU_ASSERT(resume(&srv, "srv", 3000) == 0);
	CU_ASSERT(resume(&cli, "cli", 3000) == 0);
	CU_ASSERT(tcli_ping(&srv) == 0);
	CU_ASSERT(tcli_ping(&cli) == 0);
	/* Channel, client link and unacknowledged records survived. */
	CU_ASSERT(tcli_delete(&srv, "keep", &n) == 0);
	CU_ASSERT(n == 1);
	for (int i = 1; i < 5; i++) {
		struct tcli_msg *t = NULL;

		CU_ASSERT_FATAL(tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 3000) ==
				0);
		CU_ASSERT(t->m.a == i);
		CU_ASSERT(t->m.c == cli.regno);
		tcli_back(&srv, h, t->m.u);
		tcli_msg_free(t);
	}
	CU_ASSERT(tcli_bsend(&cli, h, 5, "q", 1, 0, NULL, 3000) == 0);
	{
		struct tcli_msg *t = NULL;

		CU_ASSERT(tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 3000) == 0);
		if (t)
			CU_ASSERT(t->m.a == 5);
		tcli_msg_free(t);
	}
	/* A worker's death is no client's death: no DISMISSED. */
	{
		struct tcli_msg *t = NULL;

		CU_ASSERT(tcli_recv_op(&srv, MP_OP_EVENT, &t, 300) ==
			  -ETIMEDOUT);
		tcli_msg_free(t);
	}
	tcli_close(&srv);
	tcli_close(&cli);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

static void test_orphan_grace(void)
{
	struct tcli srv, cli;
	pid_t kids[MAX_KIDS];
	struct tcli_msg *t = NULL;
	int32_t h, regno;
	int64_t t0;

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, "resume_grace_ms 500\n") ==
			0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "g", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "gone", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "g", -2, NULL, 3000) == 0);
	regno = cli.regno;
	CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) == 1);
	kill(kids[0], SIGKILL);
	t0 = mp_time_now_ns();
	CU_ASSERT(wait_workers(mgr.pid, 1, kids, 1, 2000) >= 0);
	/* The server comes back; the client never does. */
	CU_ASSERT(tcli_ping(&srv) < 0);
	CU_ASSERT(resume(&srv, "srv", 3000) == 0);
	tcli_close(&cli);
	CU_ASSERT(tcli_recv_op(&srv, MP_OP_EVENT, &t, 3000) == 0);
	if (t) {
		CU_ASSERT(t->m.a == EV_DISMISSED);
		CU_ASSERT(t->m.c == regno);
		CU_ASSERT_STRING_EQUAL(t->m.id, "gone");
	}
	tcli_msg_free(t);
	t = NULL;
	CU_ASSERT(ms_since(t0) >= 450);
	CU_ASSERT(tcli_recv_op(&srv, MP_OP_EVENT, &t, 300) == -ETIMEDOUT);
	tcli_msg_free(t);
	/* Its token is dead now. */
	cli.token = 0;
	tcli_close(&srv);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* ---- kill -9 under buffered load ---------------------------------------- */

enum { NSENDERS = 3, NMSG = 20000 };

struct sender_report {
	int32_t regno;
	int32_t reconnects;
	uint8_t ok[NMSG];
};

/* Child: send NMSG buffered messages (type = k), resuming after a broken
 * connection and sending the unanswered one again with its request id,
 * as the library does (so a record queued by a worker that died before
 * answering would be queued twice if the manager did not recognise it);
 * report which were answered OK. */
static void sender(int idx, int fd)
{
	struct sender_report rep;
	struct tcli c;
	char id[9], data[64];
	int32_t h;

	memset(&rep, 0, sizeof(rep));
	snprintf(id, sizeof(id), "s%d", idx);
	memset(data, 'a' + idx, sizeof(data));
	if (tcli_hello(&c, mgr.port, id, 0) != 0 ||
	    tcli_connect(&c, "load", -2, &h, 5000) != 0)
		_exit(2);
	rep.regno = c.regno;
	for (int k = 0; k < NMSG; k++) {
		uint32_t reqid = c.next_reqid++;
		int rc;

		while ((rc = bsend_id(&c, reqid, h, k, data, sizeof(data),
				      NULL)) < 0) {
			rep.reconnects++;
			if (resume(&c, id, 10000) != 0)
				_exit(4);
		}
		if (rc > 0)
			_exit(3); /* a status other than success */
		rep.ok[k] = 1;
	}
	if (write(fd, &rep, sizeof(rep)) != sizeof(rep))
		_exit(5);
	tcli_bye(&c);
	_exit(0);
}

/* Per-sender delivery record on the server side. */
struct seen {
	int32_t regno;
	int32_t last;
	int order_ok;
	uint8_t count[NMSG];
};

static void test_kill_workers_under_load(void)
{
	struct sender_report rep[NSENDERS];
	struct seen seen[NSENDERS];
	pid_t pids[NSENDERS], kids[MAX_KIDS];
	int fds[NSENDERS][2], done = 0, kills = 0, reconnects = 0;
	uint64_t last_seq = 0;
	long delivered = 0, dups = 0, expected = 0;
	int have_seq = 0, unacked = 0, srv_resumes = 0;
	struct tcli srv;
	int64_t t0;
	int32_t h;

	memset(seen, 0, sizeof(seen));
	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 2, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "load", 64, &h) == 0);
	for (int i = 0; i < NSENDERS; i++) {
		CU_ASSERT_FATAL(pipe(fds[i]) == 0);
		pids[i] = mp_test_fork();
		CU_ASSERT_FATAL(pids[i] >= 0);
		if (pids[i] == 0) {
			close(fds[i][0]);
			sender(i, fds[i][1]);
		}
		close(fds[i][1]);
	}

	t0 = mp_time_now_ns();
	while (ms_since(t0) < 40000) {
		struct tcli_msg *t = NULL;
		int rc;

		/* At a third of the load kill one worker; at two thirds
		 * kill every worker (so the senders' connections surely
		 * break, wherever the kernel put them). */
		if (kills < 2 && delivered >= (kills + 1) * NSENDERS * NMSG / 3) {
			int n = children_of(mgr.pid, kids, MAX_KIDS);

			if (n == 2) {
				for (int i = 0; i < (kills ? n : 1); i++)
					kill(kids[i], SIGKILL);
				kills++;
				fprintf(stderr, "kill %d at %ld delivered\n",
					kills, delivered);
			}
		}
		/* Collect finished senders. */
		for (int i = 0; i < NSENDERS; i++) {
			int status;

			if (pids[i] <= 0 ||
			    waitpid(pids[i], &status, WNOHANG) != pids[i])
				continue;
			mp_test_forget(pids[i]);
			pids[i] = 0;
			CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
			if (read(fds[i][0], &rep[i], sizeof(rep[i])) !=
			    sizeof(rep[i]))
				memset(&rep[i], 0, sizeof(rep[i]));
			close(fds[i][0]);
			reconnects += rep[i].reconnects;
			for (int k = 0; k < NMSG; k++)
				expected += rep[i].ok[k];
			done++;
		}
		if (done == NSENDERS) {
			long got = 0;

			for (int i = 0; i < NSENDERS; i++)
				for (int j = 0; j < NSENDERS; j++)
					if (seen[j].regno == rep[i].regno)
						for (int k = 0; k < NMSG; k++)
							got += rep[i].ok[k] &&
							       seen[j].count[k];
			if (got >= expected)
				break;
		}
		rc = tcli_recv(&srv, &t, 50);
		if (rc == -ETIMEDOUT) {
			if (unacked) {
				tcli_back(&srv, h, last_seq);
				unacked = 0;
			}
			continue;
		}
		if (rc < 0) {
			/* Our worker died: resume, records come again. */
			srv_resumes++;
			CU_ASSERT_FATAL(resume(&srv, "srv", 10000) == 0);
			unacked = 0;
			continue;
		}
		if (t->m.op == MP_OP_BDELIVER) {
			if (have_seq && t->m.u <= last_seq) {
				dups++; /* re-sent after a resume */
			} else {
				int j;

				have_seq = 1;
				last_seq = t->m.u;
				for (j = 0; j < NSENDERS; j++)
					if (seen[j].regno == t->m.c ||
					    seen[j].regno == 0)
						break;
				CU_ASSERT_FATAL(j < NSENDERS);
				if (seen[j].regno == 0) {
					seen[j].regno = t->m.c;
					seen[j].last = -1;
					seen[j].order_ok = 1;
				}
				if (t->m.a >= 0 && t->m.a < NMSG) {
					seen[j].count[t->m.a]++;
					if (t->m.a <= seen[j].last)
						seen[j].order_ok = 0;
					seen[j].last = t->m.a;
				}
				delivered++;
			}
			if (++unacked >= 8) {
				tcli_back(&srv, h, last_seq);
				unacked = 0;
			}
		}
		tcli_msg_free(t);
	}
	fprintf(stderr,
		"load: %ld delivered, %ld expected OK, %ld duplicates "
		"dropped, %d kills, %d sender reconnects, %d server "
		"resumes, %lld ms\n",
		delivered, expected, dups, kills, reconnects, srv_resumes,
		(long long)ms_since(t0));
	CU_ASSERT(done == NSENDERS);
	CU_ASSERT(expected == (long)NSENDERS * NMSG); /* every one answered */
	CU_ASSERT(kills == 2);
	CU_ASSERT(reconnects > 0);
	CU_ASSERT(srv_resumes > 0);
	for (int i = 0; i < NSENDERS; i++) {
		struct seen *s = NULL;
		int lost = 0, twice = 0;

		for (int j = 0; j < NSENDERS; j++)
			if (seen[j].regno == rep[i].regno)
				s = &seen[j];
		CU_ASSERT_FATAL(s != NULL);
		CU_ASSERT(s->order_ok);
		for (int k = 0; k < NMSG; k++) {
			if (rep[i].ok[k] && s->count[k] != 1)
				lost++;
			if (s->count[k] > 1)
				twice++;
		}
		if (lost || twice)
			fprintf(stderr, "sender %d: %d OK'd not delivered once, "
					"%d delivered twice\n",
				i, lost, twice);
		CU_ASSERT(lost == 0);
		CU_ASSERT(twice == 0);
	}
	tcli_close(&srv);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* A BSEND queued by a worker that died before its answer left: the client
 * resumes and sends it again with its request id (as the library does); it
 * is answered as the first time and not queued twice. */
static void test_bsend_resent_after_death(void)
{
	struct mp_wire_msg m = { .op = MP_OP_BSEND };
	struct tcli srv, cli;
	struct tcli_msg *t = NULL;
	pid_t kids[MAX_KIDS];
	int32_t h, queued = -1;
	uint64_t seq = 0, last = 0;
	uint32_t reqid;

	/* One worker: its death breaks both connections. */
	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "once", 8, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "once", -2, NULL, 3000) == 0);
	CU_ASSERT(tcli_bsend(&cli, h, 1, "first", 5, 0, NULL, 3000) == 0);
	/* The request whose answer is lost: sent, its RESULT never read. */
	reqid = cli.next_reqid++;
	m.reqid = reqid;
	m.b = h;
	m.a = 2;
	m.c = -1;
	m.data = "again";
	m.datalen = 5;
	CU_ASSERT_FATAL(tcli_send(&cli, &m) > 0);
	/* Both are queued: the server sees them, acknowledges neither. */
	for (int i = 1; i <= 2; i++) {
		CU_ASSERT_FATAL(tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 3000) ==
				0);
		CU_ASSERT(t->m.a == i);
		seq = t->m.u;
		tcli_msg_free(t);
		t = NULL;
	}
	CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) == 1);
	kill(kids[0], SIGKILL);
	CU_ASSERT(wait_workers(mgr.pid, 1, kids, 1, 2000) >= 0);
	CU_ASSERT_FATAL(resume(&srv, "srv", 3000) == 0);
	CU_ASSERT_FATAL(resume(&cli, "cli", 3000) == 0);
	/* Sent again: the first answer ("first" was queued before it). */
	CU_ASSERT(bsend_id(&cli, reqid, h, 2, "again", 5, &queued) == 0);
	CU_ASSERT(queued == 1);
	/* A new one finds exactly two before it. */
	queued = -1;
	CU_ASSERT(tcli_bsend(&cli, h, 3, "third", 5, 0, &queued, 3000) == 0);
	CU_ASSERT(queued == 2);
	/* The server: the two unacknowledged ones again (same numbers), the
	 * third, and nothing else. */
	for (int i = 1; i <= 3; i++) {
		CU_ASSERT_FATAL(tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 3000) ==
				0);
		CU_ASSERT(t->m.a == i);
		if (i == 2)
			CU_ASSERT(t->m.u == seq);
		last = t->m.u;
		tcli_msg_free(t);
		t = NULL;
	}
	tcli_back(&srv, h, last);
	CU_ASSERT(tcli_recv_op(&srv, MP_OP_BDELIVER, &t, 300) == -ETIMEDOUT);
	tcli_msg_free(t);
	tcli_close(&srv);
	tcli_close(&cli);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* An EVENT sent by a worker that died before the server acknowledged it
 * comes again after the resume, with its number; acknowledged, never
 * again. */
static void test_event_survives_worker_death(void)
{
	struct tcli srv, cli;
	struct tcli_msg *t = NULL;
	pid_t kids[MAX_KIDS];
	int32_t h, regno;
	uint64_t u = 0;

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, NULL) == 0);
	CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
	CU_ASSERT_FATAL(tcli_create(&srv, "ev", 0, &h) == 0);
	CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
	CU_ASSERT_FATAL(tcli_connect(&cli, "ev", -2, NULL, 3000) == 0);
	regno = cli.regno;
	CU_ASSERT(tcli_disconnect(&cli, h) == 0);
	/* Received, but the acknowledgement never reaches the manager. */
	CU_ASSERT_FATAL(tcli_recv_op(&srv, MP_OP_EVENT, &t, 3000) == 0);
	CU_ASSERT(t->m.a == -2 && t->m.c == regno && t->m.u > 0);
	u = t->m.u;
	tcli_msg_free(t);
	t = NULL;
	CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) == 1);
	kill(kids[0], SIGKILL);
	CU_ASSERT(wait_workers(mgr.pid, 1, kids, 1, 2000) >= 0);
	CU_ASSERT_FATAL(resume(&srv, "srv", 3000) == 0);
	CU_ASSERT_FATAL(tcli_recv_op(&srv, MP_OP_EVENT, &t, 3000) == 0);
	CU_ASSERT(t->m.a == -2 && t->m.c == regno && t->m.u == u);
	tcli_msg_free(t);
	t = NULL;
	{
		struct mp_wire_msg m = { .op = MP_OP_BACK };

		m.flags = MP_WIRE_F_EVENT;
		m.b = h;
		m.u = u;
		CU_ASSERT(tcli_send(&srv, &m) >= 0);
	}
	CU_ASSERT(tcli_ping(&srv) == 0);
	/* Acknowledged: another worker death does not bring it back. */
	CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) == 1);
	kill(kids[0], SIGKILL);
	CU_ASSERT(wait_workers(mgr.pid, 1, kids, 1, 2000) >= 0);
	CU_ASSERT_FATAL(resume(&srv, "srv", 3000) == 0);
	CU_ASSERT(tcli_recv_op(&srv, MP_OP_EVENT, &t, 300) == -ETIMEDOUT);
	tcli_msg_free(t);
	tcli_close(&srv);
	tcli_close(&cli);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

/* ---- master death, duplicates, stale segment -------------------------------- */

static void test_master_killed(void)
{
	pid_t kids[MAX_KIDS];
	int n, gone = 0;
	int64_t t0;

	/* Orphaned workers are re-parented to us, so we can reap them. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 2, NULL) == 0);
	CU_ASSERT_FATAL(wait_workers(mgr.pid, 2, NULL, 0, 2000) >= 0);
	n = children_of(mgr.pid, kids, MAX_KIDS);
	CU_ASSERT_FATAL(n == 2);
	mp_test_kill(mgr.pid);
	t0 = mp_time_now_ns();
	while (ms_since(t0) < 3000 && gone < n) {
		gone = 0;
		for (int i = 0; i < n; i++) {
			waitpid(kids[i], NULL, WNOHANG);
			if (kill(kids[i], 0) < 0 && errno == ESRCH)
				gone++;
		}
		usleep(5000);
	}
	fprintf(stderr, "workers gone %lld ms after the master\n",
		(long long)ms_since(t0));
	CU_ASSERT(gone == n);
	CU_ASSERT(ms_since(t0) < 1000);
	for (int i = 0; i < n; i++)
		if (kill(kids[i], 0) == 0)
			kill(kids[i], SIGKILL);
	/* The last worker out removed the segment. */
	usleep(100000);
	CU_ASSERT(!shm_exists(mgr.port));
	if (shm_exists(mgr.port)) {
		char name[64];

		snprintf(name, sizeof(name), "/messip-mgr-%d", mgr.port);
		shm_unlink(name);
	}
	mgr.pid = 0;
	mp_mgrproc_stop(&mgr);
	prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* Run messip-mgr -f -c conf; return its exit status (or -1 if it was still
 * running after timeout_ms: then it is killed) with stderr in err. */
static int run_mgr(const char *conf, int timeout_ms, char *err, size_t errlen)
{
	const char *bin = getenv("MP_MGR_BIN");
	int pfd[2], status;
	pid_t pid;
	ssize_t n;
	size_t used = 0;

	if (!bin)
		bin = "./mgrd/messip-mgr";
	if (pipe(pfd) < 0)
		return -2;
	pid = mp_test_fork();
	if (pid == 0) {
		dup2(pfd[1], 2);
		execl(bin, bin, "-f", "-c", conf, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	status = mp_test_wait(pid, timeout_ms);
	if (status == -1)
		mp_test_kill(pid);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	while (used + 1 < errlen &&
	       (n = read(pfd[0], err + used, errlen - used - 1)) > 0)
		used += (size_t)n;
	err[used] = 0;
	close(pfd[0]);
	return status;
}

static void test_duplicate_manager(void)
{
	char err[4096];
	int status;

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, NULL) == 0);
	status = run_mgr(mgr.conf, 5000, err, sizeof(err));
	CU_ASSERT(status != -1 && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 2);
	CU_ASSERT(strstr(err, "MESSIP-MGR-INUSE") != NULL);
	CU_ASSERT(strstr(err, "in use") != NULL);
	/* The first one is unharmed. */
	{
		struct tcli c;

		CU_ASSERT(tcli_hello(&c, mgr.port, "x", 0) == 0);
		CU_ASSERT(tcli_ping(&c) == 0);
		tcli_close(&c);
	}
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

static void test_stale_segment(void)
{
	char name[64], conf[300], err[4096];
	struct mp_shm_hdr *hd;
	mp_shm_t s;
	pid_t pid;
	int status, port;

	/* Use a manager once to get a free port and its config file. */
	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 1, NULL) == 0);
	port = mgr.port;
	snprintf(conf, sizeof(conf), "%s.keep", mgr.conf);
	CU_ASSERT_FATAL(link(mgr.conf, conf) == 0);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
	snprintf(name, sizeof(name), "/messip-mgr-%d", port);

	/* A segment whose creator is dead (a manager killed with -9). */
	pid = fork();
	if (pid == 0) {
		if (mp_shm_create(&s, name, 0x3152474d5049534dULL, 1, 8192,
				  0600, (gid_t)-1) == 0) {
			mp_shm_publish(&s);
			_exit(0);
		}
		_exit(1);
	}
	CU_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 0);
	CU_ASSERT(shm_exists(port));
	/* The manager replaces it and serves. */
	pid = mp_test_fork();
	if (pid == 0) {
		const char *bin = getenv("MP_MGR_BIN");

		if (!bin)
			bin = "./mgrd/messip-mgr";
		execl(bin, bin, "-f", "-c", conf, (char *)NULL);
		_exit(127);
	}
	{
		struct tcli c;
		int ok = -1;

		for (int i = 0; i < 300 && ok != 0; i++) {
			ok = tcli_hello(&c, port, "x", 0);
			if (ok != 0) {
				if (ok < 0)
					usleep(10000);
				tcli_close(&c);
			}
		}
		CU_ASSERT(ok == 0);
		if (ok == 0)
			tcli_close(&c);
	}
	kill(pid, SIGTERM);
	status = mp_test_wait(pid, 5000);
	CU_ASSERT(status != -1 && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 0);
	CU_ASSERT(!shm_exists(port));

	/* Garbage under that name (not even a segment): replaced too. */
	{
		int fd = shm_open(name, O_CREAT | O_RDWR, 0600);

		CU_ASSERT_FATAL(fd >= 0);
		CU_ASSERT(ftruncate(fd, 100) == 0);
		close(fd);
	}
	status = run_mgr(conf, 700, err, sizeof(err));
	CU_ASSERT(status == -1); /* still running: it started */
	CU_ASSERT(strstr(err, "MESSIP-MGR-STALESHM") != NULL);
	shm_unlink(name);
	unlink(conf);
	hd = NULL;
	(void)hd;
}

/* ---- signals -------------------------------------------------------------- */

static void write_conf(const char *extra)
{
	FILE *f = fopen(mgr.conf, "w");

	CU_ASSERT_FATAL(f != NULL);
	fprintf(f, "listen 127.0.0.1:%d\nstatus_listen off\nworkers 2\n%s",
		mgr.port, extra);
	fclose(f);
}

/* Capacity that a channel created with 0 gets, measured by filling it. */
static int default_capacity(struct tcli *c, const char *name)
{
	int32_t h;
	int n = 0;

	if (tcli_create(c, name, 0, &h) != 0)
		return -1;
	while (n < 200 && tcli_bsend(c, h, n, "x", 1, 0, NULL, 3000) == 0)
		n++;
	return n;
}

static void test_sighup(void)
{
	struct tcli c;

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 2, "default_buffered 5\n") ==
			0);
	CU_ASSERT_FATAL(tcli_hello(&c, mgr.port, "hup", 0) == 0);
	CU_ASSERT(default_capacity(&c, "h1") == 5);

	/* Good file: the new default applies in every worker. */
	write_conf("default_buffered 3\nlog_level info\n");
	kill(mgr.pid, SIGHUP);
	usleep(300000);
	CU_ASSERT(default_capacity(&c, "h2") == 3);
	{
		struct tcli d;

		CU_ASSERT(tcli_hello(&d, mgr.port, "hup2", 0) == 0);
		CU_ASSERT(default_capacity(&d, "h3") == 3);
		tcli_close(&d);
	}

	/* Bad file: nothing of it applies, the manager goes on. */
	write_conf("default_buffered 7\nno_such_key 1\n");
	kill(mgr.pid, SIGHUP);
	usleep(300000);
	CU_ASSERT(default_capacity(&c, "h4") == 3);
	write_conf("default_buffered 7\nmax_message_size 9999999\n");
	kill(mgr.pid, SIGHUP);
	usleep(300000);
	CU_ASSERT(default_capacity(&c, "h5") == 3);
	CU_ASSERT(tcli_ping(&c) == 0);

	/* A worker started after the reload has the new settings too. */
	{
		pid_t kids[MAX_KIDS];
		struct tcli d;

		write_conf("default_buffered 4\n");
		kill(mgr.pid, SIGHUP);
		usleep(300000);
		CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) == 2);
		kill(kids[0], SIGKILL);
		kill(kids[1], SIGKILL);
		CU_ASSERT(wait_workers(mgr.pid, 2, kids, 2, 2000) >= 0);
		usleep(100000);
		CU_ASSERT(tcli_hello(&d, mgr.port, "hup3", 0) == 0);
		CU_ASSERT(default_capacity(&d, "h6") == 4);
		tcli_close(&d);
	}
	tcli_close(&c);
	CU_ASSERT(mp_mgrproc_stop(&mgr) == 0);
}

static void test_sigterm_clean(void)
{
	struct tcli c;
	int status;

	CU_ASSERT_FATAL(mp_mgrproc_start(&mgr, 2, NULL) == 0);
	CU_ASSERT(shm_exists(mgr.port));
	CU_ASSERT_FATAL(tcli_hello(&c, mgr.port, "t", 0) == 0);
	CU_ASSERT(tcli_create(&c, "t1", 0, NULL) == 0);
	status = mp_mgrproc_stop(&mgr);
	CU_ASSERT(status != -1 && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 0);
	CU_ASSERT(!shm_exists(mgr.port));
	CU_ASSERT(tcli_wait_closed(&c, 1000) == 0);
	tcli_close(&c);
}

/* Start mgr with its stderr going to a new temporary file (its name in
 * path, 128 bytes). */
static void start_logged(int workers, const char *extra, char *path)
{
	int fd, saved;

	snprintf(path, 128, "/tmp/messip-test-%ld-mgr.log", (long)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	saved = dup(STDERR_FILENO);
	CU_ASSERT_FATAL(saved >= 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	fd = mp_mgrproc_start(&mgr, workers, extra);
	dup2(saved, STDERR_FILENO);
	close(saved);
	CU_ASSERT_FATAL(fd == 0);
}

/* Count lines of the log at path holding what. */
static int log_count(const char *path, const char *what)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

/* SIGTERM with clients, a parked sender and a worker that does not answer
 * (stopped): the master stops its workers first (SIGTERM, then SIGKILL
 * after its grace), so no worker reports it gone, and exits 0. */
static void test_sigterm_no_orphaned(void)
{
	struct mp_wire_msg m = { .op = MP_OP_BSEND };
	struct tcli srv, cli;
	pid_t kids[MAX_KIDS];
	char log[128];
	int32_t h;
	int status;
	int64_t t0;

	for (int round = 0; round < 2; round++) {
		start_logged(2, "log_level info\n", log);
		CU_ASSERT_FATAL(wait_workers(mgr.pid, 2, NULL, 0, 2000) >= 0);
		CU_ASSERT_FATAL(tcli_hello(&srv, mgr.port, "srv", 0) == 0);
		CU_ASSERT_FATAL(tcli_create(&srv, "full", 1, &h) == 0);
		CU_ASSERT_FATAL(tcli_hello(&cli, mgr.port, "cli", 0) == 0);
		CU_ASSERT_FATAL(tcli_connect(&cli, "full", -2, NULL, 3000) ==
				0);
		CU_ASSERT(tcli_bsend(&cli, h, 1, "x", 1, 0, NULL, 3000) == 0);
		m.b = h;
		m.c = -1;
		m.data = "parked";
		m.datalen = 6;
		CU_ASSERT(tcli_send(&cli, &m) > 0);
		usleep(100000);
		if (round == 1) {
			CU_ASSERT_FATAL(children_of(mgr.pid, kids, MAX_KIDS) ==
					2);
			kill(kids[0], SIGSTOP);
		}
		t0 = mp_time_now_ns();
		status = mp_mgrproc_stop(&mgr);
		CU_ASSERT(status != -1 && WIFEXITED(status) &&
			  WEXITSTATUS(status) == 0);
		CU_ASSERT(ms_since(t0) < 4500);
		CU_ASSERT(!shm_exists(mgr.port));
		CU_ASSERT(log_count(log, "MESSIP-MGR-STOP") == 1);
		CU_ASSERT(log_count(log, "ORPHANED") == 0);
		CU_ASSERT(log_count(log, "MESSIP-MGR-WORKERDIED") == 0);
		if (log_count(log, "ORPHANED") != 0)
			fprintf(stderr, "round %d: a worker said its master "
					"was gone\n",
				round);
		CU_ASSERT(tcli_wait_closed(&srv, 1000) == 0);
		tcli_close(&srv);
		tcli_close(&cli);
		unlink(log);
	}
}

static const struct mp_test_case tests[] = {
	{ "workers visible in the process list", test_worker_count },
	{ "worker killed: restarted < 1 s, registrations resumed",
	  test_worker_restart_resume },
	{ "orphan not resumed: DISMISSED after the grace period",
	  test_orphan_grace },
	{ "kill -9 workers under buffered load: exactly once, in order",
	  test_kill_workers_under_load },
	{ "BSEND queued, worker killed before the answer: not queued twice",
	  test_bsend_resent_after_death },
	{ "EVENT not acknowledged when its worker dies: sent again once",
	  test_event_survives_worker_death },
	{ "master killed: workers gone < 1 s, no shm left",
	  test_master_killed },
	{ "second manager on the same port refused", test_duplicate_manager },
	{ "stale segment of a dead manager replaced", test_stale_segment },
	{ "SIGHUP: good file applies, bad file keeps settings", test_sighup },
	{ "SIGTERM: clean stop, no shm left", test_sigterm_clean },
	{ "SIGTERM: workers stopped first, none reports ORPHANED",
	  test_sigterm_no_orphaned },
	MP_TEST_END
};

int main(void)
{
	mp_test_init("test_mgr_proc", 120);
	return mp_test_main("mgr_proc", tests);
}
