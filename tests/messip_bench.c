/*
 * messip-bench — the product benchmark.
 *
 * Measures, in one run, synchronous round trips (rate and p50/p99
 * latency), buffered messages through the manager, and name look-ups,
 * each beside a raw TCP baseline measured immediately before it; and the
 * same-host fast path (rows shm-*: the copying and zero-copy calls,
 * buffered messages, four clients) beside bare shared-memory baselines
 * (spinning and futex ping-pong, an SPSC ring).  It prints one table with
 * the ratio messip/raw per row.  The machine is noisy, so a ratio is only
 * ever taken between two adjacent measurements.  The TCP rows run their
 * messip processes with MESSIP_NO_SHM=1, so they measure TCP even though
 * both ends share the host.
 *
 * Shape:
 * - One table of row kinds (kinds[]) says what each row measures; main()
 *   expands it over the sizes and worker/client counts into cells.
 * - A measurement ("trial") forks its server processes, waits until each
 *   says it is ready, forks the client processes, and reads what the
 *   measuring side wrote into a shared anonymous mapping (no /dev/shm
 *   object).  Raw baselines and messip runs go through the same trial
 *   engine and the same timing loops (run_ops, run_drain) and percentile
 *   code, so they differ only in the operation being timed.
 * - The parent never calls messip itself: no child inherits a live
 *   messip connection, and each child calls messip_init after the fork.
 *
 * Invariants: every process this program starts (managers, trial
 * children) is recorded and stopped on every exit path — normal end,
 * error, SIGINT/SIGTERM and the alarm() watchdog; managers get SIGTERM so
 * they remove their shared memory; config and log files are unlinked.
 * Children also die with the parent (PR_SET_PDEATHSIG) and carry their own
 * alarm.  Servers end cleanly (channel deleted, connection closed) when
 * the run ends, never by a signal, except on an error path.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/futex.h>
#include <unistd.h>

#include "messip.h"

#define MAX_SIZES    16
#define MAX_CLIENTS  4
#define MAX_WORKERS  4
#define MAX_KIDS     (2 * MAX_CLIENTS)
#define FRAME_HDR    4		  /* raw frames: 32-bit length, network order */
#define LAT_CAP	     (1u << 18)	  /* latency samples kept per process */
#define WARMUP_OPS   20		  /* untimed: connection set-up, page faults */
#define LOOKUP_SIZE  32		  /* raw baseline frame for look-ups: ~a name */
#define STREAM_CHUNK (256 * 1024) /* raw stream reader buffer */
#define ROUNDS	     3 /* raw and messip alternate this often per cell */

/* Deadlines.  Generous: they only matter when something is broken. */
#define MGR_START_MS   10000
#define READY_MS       10000
#define CONNECT_MS     5000
#define CALL_MS	       5000 /* look-ups, buffered sends, clean-up calls */
#define RECV_IDLE_MS   5000 /* a buffered receiver giving up */
#define SERVER_POLL_MS 100  /* look-up server: how often it checks stop */
#define TRIAL_SLACK_S  20   /* beyond the cell time, per trial */

/*
 * Buffered queue capacity asked at channel create.  Deep enough that the
 * sender and the manager can batch; a real server picks its own.
 */
#define BUFFERED_QUEUE 4096

/* Message types the messip runs use between their own processes. */
enum { MSG_DATA = 0, MSG_END = 1 };

/*
 * What one process of a trial reports.  Lives in a MAP_SHARED|MAP_ANONYMOUS
 * mapping made by the parent before forking.
 */
struct slot {
	int32_t rc; /* 0, or -errno with err filled in */
	char err[128];
	uint64_t ops;  /* operations (or messages) counted ... */
	uint64_t ns;   /* ... over this many nanoseconds */
	uint64_t seen; /* latency samples offered (kept: min(seen, CAP)) */
	uint64_t rng;  /* reservoir sampling state */
	uint32_t lat[LAT_CAP]; /* nanoseconds */
};

struct cell;
struct trial;

/*
 * One way of measuring.  A trial forks nservers servers (one per client
 * for the raw baselines, one for all clients for messip), then the clients.
 */
struct trial_ops {
	int (*serve)(struct trial *t, struct slot *s);
	int (*client)(struct trial *t, struct slot *s);
	bool raw;     /* parent makes a listen socket; a server per client */
	bool stream;  /* servers measure; they must receive all that was sent */
	bool latency; /* clients record each operation's latency */
	bool stop_signal; /* servers run until SIGTERM, not until input ends */
	bool shm;     /* messip: same-host fast path allowed (other messip
			 trials run with MESSIP_NO_SHM=1: the TCP path) */
	bool bare;    /* raw on a shared anonymous mapping, not TCP */
	bool pin;     /* server on CPU 0, client on CPU 1 (2+ CPUs) */
	bool single;  /* one client, whatever the cell says */
};

struct trial {
	const struct cell *cell;
	const struct trial_ops *ops;
	double secs;
	int listen_fd;	     /* raw: shared by the servers */
	int port;	     /* raw: where clients connect */
	int ready_fd;	     /* server: write a byte when ready */
	const char *mgr_ref; /* messip: "127.0.0.1:port" */
	void *map;	     /* bare: the shared mappings (struct bare) */
	int nclients;	     /* processes on the client side */
	int nservers;
	struct slot *slots_base; /* servers' slots, then the clients' */
	char chname[MESSIP_CHANNEL_NAME_MAXLEN + 1];
	char missing[MESSIP_CHANNEL_NAME_MAXLEN + 1];
};

/* What a trial measured, as printed. */
struct measure {
	bool done;
	char err[160];
	double rate; /* per second, summed over the measuring processes */
	bool has_lat;
	double p50_us, p99_us;
};

/* A row of the table. */
struct row_kind {
	const char *name;
	const char *group;  /* for --only */
	const char *legend; /* what the row measures, for the reader */
	const struct trial_ops *raw, *messip;
	bool sized; /* uses the size list (else LOOKUP_SIZE) */
	const int *default_sizes;
	int nvariants;
	struct {
		int workers, clients;
	} variants[4];
};

struct cell {
	const struct row_kind *kind;
	int size;
	int workers;
	int clients;
	struct measure raw, mp;
};

/* ------------------------------------------------------------------ */
/* Process bookkeeping shared with the signal handler.                */

struct mgr {
	pid_t pid;
	int port;
	bool failed;
	char conf[64];
	char log[64];
	char ref[32];
};

static volatile pid_t g_kids[MAX_KIDS];
static struct mgr g_mgrs[MAX_WORKERS + 1]; /* index: workers */
static volatile sig_atomic_t g_stop;	   /* children: asked to stop */
static const char *g_mgr_bin;
static bool g_verbose;
static pid_t g_parent;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Wait for pid up to ms; true when reaped.  Async-signal-safe. */
static bool reap_within(pid_t pid, int ms, int *status)
{
	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD))
			return true;
		if (waited >= ms)
			return false;
		sleep_ms(10);
	}
}

/* SIGTERM so it removes its shared memory; SIGKILL if it will not go. */
static void mgr_kill(struct mgr *m)
{
	if (m->pid > 0) {
		kill(m->pid, SIGTERM);
		if (!reap_within(m->pid, 5000, NULL)) {
			kill(m->pid, SIGKILL);
			reap_within(m->pid, 1000, NULL);
		}
		m->pid = 0;
	}
	if (m->conf[0])
		unlink(m->conf);
	if (m->log[0])
		unlink(m->log);
}

static void kids_kill(void)
{
	for (int i = 0; i < MAX_KIDS; i++) {
		pid_t pid = g_kids[i];

		if (pid > 0) {
			kill(pid, SIGKILL);
			reap_within(pid, 1000, NULL);
			g_kids[i] = 0;
		}
	}
}

/*
 * Parent's SIGINT/SIGTERM/SIGHUP and the alarm() watchdog: stop
 * everything and leave.  Uses only async-signal-safe calls.
 */
static void on_fatal_signal(int sig)
{
	static const char msg[] = "messip-bench: watchdog or signal: "
				  "stopping children and managers\n";

	if (getpid() != g_parent)
		_exit(3);
	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	kids_kill();
	for (int w = 0; w <= MAX_WORKERS; w++)
		mgr_kill(&g_mgrs[w]);
	_exit(2);
}

static void watchdog_arm(unsigned seconds)
{
	alarm(seconds);
}

static void on_stop_request(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void set_handler(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL);
}

/* ------------------------------------------------------------------ */
/* Timing, shared by every measurement.                               */

static void slot_sample(struct slot *s, uint64_t ns)
{
	uint32_t v = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;

	if (s->seen < LAT_CAP) {
		s->lat[s->seen] = v;
	} else {
		/* Reservoir: keep a uniform sample of a long run. */
		uint64_t j;

		s->rng ^= s->rng << 13;
		s->rng ^= s->rng >> 7;
		s->rng ^= s->rng << 17;
		j = s->rng % (s->seen + 1);
		if (j < LAT_CAP)
			s->lat[j] = v;
	}
	s->seen++;
}

/*
 * Call op until secs have passed (after `warmup` untimed calls), counting
 * and, if asked, timing each call.  op returns 0 or -errno.
 */
static int run_ops(int (*op)(void *), void *arg, double secs, int warmup,
		   bool latency, struct slot *s)
{
	uint64_t t0, t, end;
	int rc;

	for (int i = 0; i < warmup; i++)
		if ((rc = op(arg)) < 0)
			return rc;
	t0 = t = now_ns();
	end = t0 + (uint64_t)(secs * 1e9);
	s->rng = t0 | 1;
	do {
		uint64_t t1;

		if ((rc = op(arg)) < 0)
			return rc;
		t1 = now_ns();
		if (latency)
			slot_sample(s, t1 - t);
		t = t1;
		s->ops++;
	} while (t < end && !g_stop);
	s->ns = t - t0;
	return 0;
}

/*
 * Receive until next() reports the end (0), counting messages (1 each)
 * and timing from the first message to the end.
 */
static int run_drain(int (*next)(void *), void *arg, struct slot *s)
{
	uint64_t t0 = 0;
	int rc;

	while ((rc = next(arg)) > 0)
		if (s->ops++ == 0)
			t0 = now_ns();
	if (rc < 0)
		return rc;
	s->ns = s->ops ? now_ns() - t0 : 0;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* p50 and p99 over the samples of slots[0..n-1]; false when none. */
static bool percentiles(struct slot *slots, int n, double *p50, double *p99)
{
	size_t total = 0, k = 0;
	uint32_t *all;

	for (int i = 0; i < n; i++)
		total += slots[i].seen < LAT_CAP ? slots[i].seen : LAT_CAP;
	if (total == 0 || !(all = malloc(total * sizeof(*all))))
		return false;
	for (int i = 0; i < n; i++) {
		size_t m = slots[i].seen < LAT_CAP ? slots[i].seen : LAT_CAP;

		memcpy(all + k, slots[i].lat, m * sizeof(*all));
		k += m;
	}
	qsort(all, total, sizeof(*all), cmp_u32);
	*p50 = all[total / 2] / 1e3;
	*p99 = all[(size_t)(total * 0.99)] / 1e3;
	free(all);
	return true;
}

static int fail(struct slot *s, int err, const char *what)
{
	snprintf(s->err, sizeof(s->err), "%s: %s", what, strerror(err));
	return -err;
}

/* ------------------------------------------------------------------ */
/* Plain TCP on loopback.                                             */

static int tcp_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A listening socket on 127.0.0.1, port chosen by the kernel. */
static int tcp_listen_local(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static int tcp_connect_local(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* 1 read all, 0 end of stream before the first byte, -errno. */
static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return got ? -ECONNRESET : 0;
		got += (size_t)n;
	}
	return 1;
}

/* One frame into buf (at most max bytes): 1 with *len, 0 at end, -errno. */
static int frame_read(int fd, void *buf, size_t max, size_t *len)
{
	uint32_t hdr;
	int rc;

	if ((rc = read_all(fd, &hdr, sizeof(hdr))) <= 0)
		return rc;
	*len = ntohl(hdr);
	if (*len > max)
		return -EBADMSG;
	if (*len == 0)
		return 1;
	return (rc = read_all(fd, buf, *len)) == 0 ? -ECONNRESET : rc;
}

/* A frame of `size` payload bytes, header included, ready to write. */
static char *frame_make(int size)
{
	char *f = calloc(1, FRAME_HDR + (size_t)size);
	uint32_t hdr = htonl((uint32_t)size);

	if (f)
		memcpy(f, &hdr, sizeof(hdr));
	return f;
}

/* ------------------------------------------------------------------ */
/* Raw baselines.                                                     */

struct raw_peer {
	int fd;
	int size;
	char *frame; /* header + payload */
	char *rbuf;
	size_t cap;
};

/* Accept one connection on the trial's listen socket; say we are ready
 * first, since the socket already exists. */
static int raw_accept(struct trial *t, struct slot *s)
{
	int fd;

	(void)!write(t->ready_fd, "r", 1);
	fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return fail(s, errno, "accept");
	tcp_nodelay(fd);
	return fd;
}

static int raw_peer_open(struct raw_peer *p, int fd, int size)
{
	p->fd = fd;
	p->size = size;
	p->cap = MESSIP_MAX_MSGLEN;
	p->frame = frame_make(size);
	p->rbuf = malloc(p->cap);
	return p->frame && p->rbuf ? 0 : -ENOMEM;
}

static void raw_peer_close(struct raw_peer *p)
{
	close(p->fd);
	free(p->frame);
	free(p->rbuf);
}

/* Echo frames back until the client closes. */
static int raw_pingpong_serve(struct trial *t, struct slot *s)
{
	struct raw_peer p;
	size_t len;
	int fd, rc;

	if ((fd = raw_accept(t, s)) < 0)
		return fd;
	if ((rc = raw_peer_open(&p, fd, MESSIP_MAX_MSGLEN)) < 0)
		return fail(s, -rc, "malloc");
	while ((rc = frame_read(fd, p.frame + FRAME_HDR, p.cap, &len)) > 0) {
		uint32_t hdr = htonl((uint32_t)len);

		memcpy(p.frame, &hdr, sizeof(hdr));
		if ((rc = write_all(fd, p.frame, FRAME_HDR + len)) < 0)
			break;
	}
	raw_peer_close(&p);
	return rc < 0 ? fail(s, -rc, "raw echo") : 0;
}

static int op_raw_roundtrip(void *arg)
{
	struct raw_peer *p = arg;
	size_t len;
	int rc;

	if ((rc = write_all(p->fd, p->frame, FRAME_HDR + (size_t)p->size)) < 0)
		return rc;
	if ((rc = frame_read(p->fd, p->rbuf, p->cap, &len)) <= 0)
		return rc ? rc : -ECONNRESET;
	return len == (size_t)p->size ? 0 : -EBADMSG;
}

static int op_raw_write(void *arg)
{
	struct raw_peer *p = arg;

	return write_all(p->fd, p->frame, FRAME_HDR + (size_t)p->size);
}

/* Client side of both raw baselines: ping-pong or one-way stream. */
static int raw_client(struct trial *t, struct slot *s)
{
	struct raw_peer p;
	int fd, rc;

	if ((fd = tcp_connect_local(t->port)) < 0)
		return fail(s, -fd, "connect");
	tcp_nodelay(fd);
	if ((rc = raw_peer_open(&p, fd, t->cell->size)) < 0)
		return fail(s, -rc, "malloc");
	rc = run_ops(t->ops->stream ? op_raw_write : op_raw_roundtrip, &p,
		     t->secs, t->ops->stream ? 0 : WARMUP_OPS, t->ops->latency,
		     s);
	raw_peer_close(&p);
	return rc < 0 ? fail(s, -rc, "raw client") : 0;
}

/* Frames parsed out of large reads, as a buffered reader would. */
struct stream_reader {
	int fd;
	size_t want; /* payload size every frame must have */
	char *buf;
	size_t pos, fill;
};

static int next_raw_frame(void *arg)
{
	struct stream_reader *r = arg;

	for (;;) {
		size_t avail = r->fill - r->pos;
		ssize_t n;

		if (avail >= FRAME_HDR) {
			uint32_t hdr;

			memcpy(&hdr, r->buf + r->pos, sizeof(hdr));
			if (ntohl(hdr) != r->want)
				return -EBADMSG;
			if (avail >= FRAME_HDR + r->want) {
				r->pos += FRAME_HDR + r->want;
				return 1;
			}
		}
		memmove(r->buf, r->buf + r->pos, avail);
		r->pos = 0;
		r->fill = avail;
		n = read(r->fd, r->buf + r->fill, STREAM_CHUNK - r->fill);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return avail ? -ECONNRESET : 0;
		r->fill += (size_t)n;
	}
}

static int raw_stream_serve(struct trial *t, struct slot *s)
{
	struct stream_reader r = {.want = (size_t)t->cell->size};
	int rc;

	if ((r.fd = raw_accept(t, s)) < 0)
		return r.fd;
	if (!(r.buf = malloc(STREAM_CHUNK)))
		return fail(s, ENOMEM, "malloc");
	rc = run_drain(next_raw_frame, &r, s);
	close(r.fd);
	free(r.buf);
	return rc < 0 ? fail(s, -rc, "raw stream") : 0;
}

/* ------------------------------------------------------------------ */
/* messip runs.                                                       */

struct mp_peer {
	messip_cnx_t *cnx;
	messip_channel_t *ch;
	const char *name; /* for look-ups */
	int size;
	int ends; /* buffered receiver: END messages to wait for */
	char *buf;
	char *rbuf;
};

/* How a messip process of a trial attaches to the trial's channel. */
enum mp_role {
	MP_SERVER, /* create it */
	MP_CLIENT, /* connect to it */
	MP_BARE,   /* only register: look-up clients connect in their loop */
};

static int mp_errno(void)
{
	return errno ? errno : EIO;
}

/* Register with the trial's manager and attach to the channel as role
 * says; a server then tells the parent it is ready. */
static int mp_open(struct trial *t, struct slot *s, struct mp_peer *p,
		   enum mp_role role, int32_t queue)
{
	bool server = role == MP_SERVER;

	memset(p, 0, sizeof(*p));
	p->size = t->cell->size;
	p->buf = calloc(1, MESSIP_MAX_MSGLEN);
	p->rbuf = calloc(1, MESSIP_MAX_MSGLEN);
	if (!p->buf || !p->rbuf)
		return fail(s, ENOMEM, "malloc");
	messip_init();
	p->cnx = messip_connect(t->mgr_ref, server ? "bsrv" : "bcli",
				CONNECT_MS);
	if (!p->cnx)
		return fail(s, mp_errno(), "messip_connect");
	if (role == MP_BARE)
		return 0;
	if (server)
		p->ch = messip_channel_create(p->cnx, t->chname, CONNECT_MS,
					      queue);
	else
		p->ch = messip_channel_connect(p->cnx, t->chname, CONNECT_MS);
	if (!p->ch)
		return fail(s, mp_errno(),
			    server ? "messip_channel_create"
				   : "messip_channel_connect");
	if (server)
		(void)!write(t->ready_fd, "r", 1);
	return 0;
}

/* End cleanly: the manager frees the name, nothing is left behind. */
static void mp_close(struct mp_peer *p, enum mp_role role)
{
	if (p->ch && role == MP_SERVER)
		messip_channel_delete(p->ch, CALL_MS);
	else if (p->ch)
		messip_channel_disconnect(p->ch, CALL_MS);
	if (p->cnx)
		messip_disconnect(p->cnx, CALL_MS);
	free(p->buf);
	free(p->rbuf);
}

/*
 * Echo each request until MSG_END, the client is gone, or (idle) the
 * parent asks us to stop because the client failed.
 */
static int mp_sync_serve(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_SERVER, 0)) < 0)
		goto out;
	for (;;) {
		int32_t type;
		int idx = messip_receive(p.ch, &type, p.buf, MESSIP_MAX_MSGLEN,
					 RECV_IDLE_MS);

		if (idx == MESSIP_MSG_DISCONNECT || idx == MESSIP_MSG_DISMISSED)
			break;
		if (idx == MESSIP_MSG_TIMEOUT && g_stop)
			break;
		if (idx == -1) {
			rc = fail(s, mp_errno(), "messip_receive");
			break;
		}
		if (idx < 0)
			continue;
		if (messip_reply(p.ch, idx, 0, p.buf, p.ch->datalenr,
				 MESSIP_NOTIMEOUT) < 0) {
			rc = fail(s, mp_errno(), "messip_reply");
			break;
		}
		if (type == MSG_END)
			break;
	}
out:
	mp_close(&p, MP_SERVER);
	return rc;
}

static int op_mp_send(void *arg)
{
	struct mp_peer *p = arg;
	int32_t answer;

	/* The reply buffer's whole capacity, as a program passes it: a
	 * reply_maxlen of 0 would ask for dynamic mode (a malloc per call,
	 * the caller's to free). */
	if (messip_send(p->ch, MSG_DATA, p->buf, p->size, &answer, p->rbuf,
			MESSIP_MAX_MSGLEN, MESSIP_NOTIMEOUT) != 0)
		return -mp_errno();
	return p->ch->datalen == p->size ? 0 : -EBADMSG;
}

static int mp_sync_client(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int32_t answer;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_CLIENT, 0)) < 0)
		goto out;
	rc = run_ops(op_mp_send, &p, t->secs, WARMUP_OPS, true, s);
	if (rc < 0)
		rc = fail(s, -rc, "messip_send");
	else if (messip_send(p.ch, MSG_END, p.buf, 0, &answer, NULL, 0,
			     CALL_MS) != 0)
		rc = fail(s, mp_errno(), "messip_send (end)");
out:
	mp_close(&p, MP_CLIENT);
	return rc;
}

/* 1 a data message, 0 every sender's MSG_END seen, -errno. */
static int next_mp_buffered(void *arg)
{
	struct mp_peer *p = arg;

	for (;;) {
		int32_t type;
		int idx = messip_receive(p->ch, &type, p->buf,
					 MESSIP_MAX_MSGLEN, RECV_IDLE_MS);

		if (idx == MESSIP_MSG_NOREPLY && type == MSG_END) {
			if (--p->ends == 0)
				return 0;
			continue;
		}
		if (idx == MESSIP_MSG_NOREPLY)
			return p->ch->datalen == p->size ? 1 : -EBADMSG;
		if (idx == MESSIP_MSG_TIMEOUT)
			return -ETIMEDOUT;
		if (idx == -1)
			return -mp_errno();
		if (idx >= 0)
			messip_reply(p->ch, idx, 0, NULL, 0, CALL_MS);
		/* DISCONNECT and friends: a sender's END is still to come,
		 * events need not keep order with buffered messages. */
	}
}

static int mp_buffered_serve(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_SERVER, BUFFERED_QUEUE)) < 0)
		goto out;
	p.ends = t->nclients;
	if ((rc = run_drain(next_mp_buffered, &p, s)) < 0)
		rc = fail(s, -rc, "buffered receive");
out:
	mp_close(&p, MP_SERVER);
	return rc;
}

static int op_mp_buffered_send(void *arg)
{
	struct mp_peer *p = arg;

	if (messip_buffered_send(p->ch, MSG_DATA, p->buf, p->size, CALL_MS) < 0)
		return -mp_errno();
	return 0;
}

static int mp_buffered_client(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_CLIENT, 0)) < 0)
		goto out;
	rc = run_ops(op_mp_buffered_send, &p, t->secs, 0, false, s);
	if (rc < 0)
		rc = fail(s, -rc, "messip_buffered_send");
	else if (messip_buffered_send(p.ch, MSG_END, p.buf, 0, CALL_MS) < 0)
		rc = fail(s, mp_errno(), "messip_buffered_send (end)");
out:
	mp_close(&p, MP_CLIENT);
	return rc;
}

/* Own the looked-up channel and answer whatever comes until told to stop. */
static int mp_lookup_serve(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_SERVER, 0)) < 0)
		goto out;
	while (!g_stop) {
		int32_t type;
		int idx = messip_receive(p.ch, &type, p.buf, MESSIP_MAX_MSGLEN,
					 SERVER_POLL_MS);

		if (idx == -1) {
			rc = fail(s, mp_errno(), "messip_receive");
			break;
		}
		if (idx >= 0)
			messip_reply(p.ch, idx, 0, NULL, 0, CALL_MS);
	}
out:
	mp_close(&p, MP_SERVER);
	return rc;
}

static int op_mp_connect_disconnect(void *arg)
{
	struct mp_peer *p = arg;
	messip_channel_t *ch = messip_channel_connect(p->cnx, p->name, CALL_MS);

	if (!ch)
		return -mp_errno();
	if (messip_channel_disconnect(ch, CALL_MS) != MESSIP_OK)
		return -mp_errno();
	return 0;
}

static int op_mp_connect_missing(void *arg)
{
	struct mp_peer *p = arg;
	messip_channel_t *ch = messip_channel_connect(p->cnx, p->name, CALL_MS);

	if (ch) {
		messip_channel_disconnect(ch, CALL_MS);
		return -EEXIST;
	}
	return errno == ENOENT ? 0 : -mp_errno();
}

static int mp_lookup_client(struct trial *t, struct slot *s, int (*op)(void *),
			    const char *name)
{
	struct mp_peer p;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_BARE, 0)) < 0)
		goto out;
	p.name = name;
	if ((rc = run_ops(op, &p, t->secs, WARMUP_OPS, true, s)) < 0)
		rc = fail(s, -rc, "look-up");
out:
	mp_close(&p, MP_CLIENT);
	return rc;
}

static int mp_lookup_connect_client(struct trial *t, struct slot *s)
{
	return mp_lookup_client(t, s, op_mp_connect_disconnect, t->chname);
}

static int mp_lookup_missing_client(struct trial *t, struct slot *s)
{
	return mp_lookup_client(t, s, op_mp_connect_missing, t->missing);
}

/* ------------------------------------------------------------------ */
/* Same host: bare shared-memory baselines and the zero-copy calls.   */

/*
 * The bare baselines share one anonymous mapping per server/client pair
 * (made by the parent before forking: no /dev/shm object).  Each counter
 * has its own cache line.  Ping-pong: the client copies SIZE bytes into
 * req_data and bumps req; the server copies them out and back into
 * rep_data (what messip's copying API does: receive copies out, reply
 * copies in) and bumps rep.  Ring: a single-producer single-consumer ring
 * of fixed cells, the simplest ring there is.
 */
#define BARE_CELLS 4096
#define BARE_CELL  128 /* bytes per ring cell: length + payload */
#define BARE_END   UINT32_MAX

struct bare {
	_Alignas(64) uint32_t req; /* ping-pong: request sequence */
	_Alignas(64) uint32_t rep; /* ping-pong: reply sequence */
	_Alignas(64) uint32_t stop;
	_Alignas(64) uint64_t head; /* ring: cells produced */
	_Alignas(64) uint64_t tail; /* ring: cells consumed */
	_Alignas(64) uint8_t req_data[MESSIP_MAX_MSGLEN];
	_Alignas(64) uint8_t rep_data[MESSIP_MAX_MSGLEN];
	_Alignas(64) uint8_t cells[BARE_CELLS][BARE_CELL];
};

/* A bare run's state in one process. */
struct bare_peer {
	struct bare *b;
	int size;
	uint32_t seq;
	bool futex; /* sleep in the kernel between messages, no spinning */
	uint8_t *buf;
};

static void pin_cpu(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static void bare_futex_wait(uint32_t *w, uint32_t v)
{
	syscall(SYS_futex, w, FUTEX_WAIT, v, NULL, NULL, 0);
}

static void bare_futex_wake(uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Wait while *w == v (spinning, or asleep); false when stopped. */
static bool bare_wait(const struct bare_peer *p, uint32_t *w, uint32_t v)
{
	/* Acquire: the data written before the counter moved. */
	while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == v) {
		if (__atomic_load_n(&p->b->stop, __ATOMIC_RELAXED))
			return false;
		if (p->futex)
			bare_futex_wait(w, v);
		else
			cpu_pause();
	}
	return true;
}

static void bare_post(const struct bare_peer *p, uint32_t *w, uint32_t v)
{
	/* Release: publishes the data written before. */
	__atomic_store_n(w, v, __ATOMIC_RELEASE);
	if (p->futex)
		bare_futex_wake(w);
}

static int bare_open(struct trial *t, struct slot *s, struct bare_peer *p,
		     bool futex)
{
	int idx = (int)(s - t->slots_base);

	memset(p, 0, sizeof(*p));
	/* Servers come first in the slots, clients after: pair i with i. */
	if (idx >= t->nservers)
		idx -= t->nservers;
	p->b = (struct bare *)t->map + idx;
	p->size = t->cell->size;
	p->futex = futex;
	p->buf = calloc(1, MESSIP_MAX_MSGLEN);
	return p->buf ? 0 : fail(s, ENOMEM, "malloc");
}

static int bare_pp_serve_common(struct trial *t, struct slot *s, bool futex)
{
	struct bare_peer p;
	int rc = bare_open(t, s, &p, futex);

	if (rc < 0)
		return rc;
	(void)!write(t->ready_fd, "r", 1);
	for (uint32_t seq = 0;; seq++) {
		if (!bare_wait(&p, &p.b->req, seq))
			break;
		memcpy(p.buf, p.b->req_data, (size_t)p.size);
		memcpy(p.b->rep_data, p.buf, (size_t)p.size);
		bare_post(&p, &p.b->rep, seq + 1);
	}
	free(p.buf);
	return 0;
}

static int bare_spin_serve(struct trial *t, struct slot *s)
{
	return bare_pp_serve_common(t, s, false);
}

static int bare_futex_serve(struct trial *t, struct slot *s)
{
	return bare_pp_serve_common(t, s, true);
}

static int op_bare_roundtrip(void *arg)
{
	struct bare_peer *p = arg;

	memcpy(p->b->req_data, p->buf, (size_t)p->size);
	bare_post(p, &p->b->req, ++p->seq);
	if (!bare_wait(p, &p->b->rep, p->seq - 1))
		return -EPIPE;
	memcpy(p->buf, p->b->rep_data, (size_t)p->size);
	return 0;
}

static int bare_pp_client_common(struct trial *t, struct slot *s, bool futex)
{
	struct bare_peer p;
	int rc = bare_open(t, s, &p, futex);

	if (rc < 0)
		return rc;
	rc = run_ops(op_bare_roundtrip, &p, t->secs, WARMUP_OPS, true, s);
	__atomic_store_n(&p.b->stop, 1, __ATOMIC_RELEASE);
	bare_futex_wake(&p.b->req);
	free(p.buf);
	return rc < 0 ? fail(s, -rc, "bare round trip") : 0;
}

static int bare_spin_client(struct trial *t, struct slot *s)
{
	return bare_pp_client_common(t, s, false);
}

static int bare_futex_client(struct trial *t, struct slot *s)
{
	return bare_pp_client_common(t, s, true);
}

/* Ring: one cell per message, the length in its first 4 bytes. */
static int op_bare_push(void *arg)
{
	struct bare_peer *p = arg;
	struct bare *b = p->b;
	uint64_t h = __atomic_load_n(&b->head, __ATOMIC_RELAXED);
	uint8_t *cell;

	/* Acquire: the consumer is done with the cell we reuse. */
	while (h - __atomic_load_n(&b->tail, __ATOMIC_ACQUIRE) >= BARE_CELLS)
		cpu_pause();
	cell = b->cells[h % BARE_CELLS];
	memcpy(cell, &(uint32_t){(uint32_t)p->size}, 4);
	memcpy(cell + 4, p->buf, (size_t)p->size);
	/* Release: the cell's bytes before the new head. */
	__atomic_store_n(&b->head, h + 1, __ATOMIC_RELEASE);
	return 0;
}

static int bare_next(void *arg)
{
	struct bare_peer *p = arg;
	struct bare *b = p->b;
	uint64_t t = __atomic_load_n(&b->tail, __ATOMIC_RELAXED);
	uint32_t len;

	while (__atomic_load_n(&b->head, __ATOMIC_ACQUIRE) == t)
		cpu_pause();
	memcpy(&len, b->cells[t % BARE_CELLS], 4);
	if (len != BARE_END)
		memcpy(p->buf, b->cells[t % BARE_CELLS] + 4,
		       len < BARE_CELL - 4 ? len : BARE_CELL - 4);
	__atomic_store_n(&b->tail, t + 1, __ATOMIC_RELEASE);
	return len == BARE_END ? 0 : 1;
}

static int bare_ring_serve(struct trial *t, struct slot *s)
{
	struct bare_peer p;
	int rc = bare_open(t, s, &p, false);

	if (rc < 0)
		return rc;
	(void)!write(t->ready_fd, "r", 1);
	rc = run_drain(bare_next, &p, s);
	free(p.buf);
	return rc;
}

static int bare_ring_client(struct trial *t, struct slot *s)
{
	struct bare_peer p;
	int rc = bare_open(t, s, &p, false);

	if (rc < 0)
		return rc;
	if (p.size > BARE_CELL - 4)
		p.size = BARE_CELL - 4;
	rc = run_ops(op_bare_push, &p, t->secs, 0, false, s);
	/* The end marker: a cell whose length is BARE_END. */
	{
		struct bare *b = p.b;
		uint64_t h = __atomic_load_n(&b->head, __ATOMIC_RELAXED);

		while (h - __atomic_load_n(&b->tail, __ATOMIC_ACQUIRE) >=
		       BARE_CELLS)
			cpu_pause();
		memcpy(b->cells[h % BARE_CELLS], &(uint32_t){BARE_END}, 4);
		__atomic_store_n(&b->head, h + 1, __ATOMIC_RELEASE);
	}
	free(p.buf);
	return rc;
}

/* Zero copy: the server echoes from its view of the request (no copy);
 * the client fills the head of a loaned buffer and reads the reply in
 * place. */
static int mp_zc_serve(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_SERVER, 0)) < 0)
		goto out;
	for (;;) {
		const void *data;
		int32_t type;
		int len;
		int idx = messip_receive_view(p.ch, &type, &data, &len,
					      RECV_IDLE_MS);

		if (idx == MESSIP_MSG_DISCONNECT || idx == MESSIP_MSG_DISMISSED)
			break;
		if (idx == MESSIP_MSG_TIMEOUT && g_stop)
			break;
		if (idx == -1) {
			rc = fail(s, mp_errno(), "messip_receive_view");
			break;
		}
		if (idx < 0)
			continue;
		if (messip_reply(p.ch, idx, 0, data, len, MESSIP_NOTIMEOUT) <
		    0) {
			rc = fail(s, mp_errno(), "messip_reply");
			break;
		}
		if (type == MSG_END)
			break;
	}
out:
	mp_close(&p, MP_SERVER);
	return rc;
}

static int op_mp_send_zc(void *arg)
{
	struct mp_peer *p = arg;
	const void *reply;
	int32_t answer;
	int rlen;
	char *b = messip_buffer_loan(p->ch, (size_t)p->size, CALL_MS);

	if (!b)
		return -mp_errno();
	memcpy(b, p->buf, p->size < 64 ? (size_t)p->size : 64);
	if (messip_send_view(p->ch, MSG_DATA, b, p->size, &answer, &reply,
			     &rlen, MESSIP_NOTIMEOUT) != 0)
		return -mp_errno();
	if (rlen != p->size)
		return -EBADMSG;
	return messip_buffer_release(p->ch, reply) == 0 ? 0 : -mp_errno();
}

static int mp_zc_client(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int32_t answer;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_CLIENT, 0)) < 0)
		goto out;
	if (messip_channel_path(p.ch) != MESSIP_PATH_SHM) {
		rc = fail(s, EPROTONOSUPPORT, "same-host path not taken");
		goto out;
	}
	rc = run_ops(op_mp_send_zc, &p, t->secs, WARMUP_OPS, true, s);
	if (rc < 0)
		rc = fail(s, -rc, "zero-copy round trip");
	else if (messip_send(p.ch, MSG_END, p.buf, 0, &answer, NULL, 0,
			     CALL_MS) != 0)
		rc = fail(s, mp_errno(), "messip_send (end)");
out:
	mp_close(&p, MP_CLIENT);
	return rc;
}

/* Echo for several clients: ends when each has sent MSG_END (or left). */
static int mp_many_serve(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int rc, ends;

	if ((rc = mp_open(t, s, &p, MP_SERVER, 0)) < 0)
		goto out;
	ends = t->nclients;
	while (ends > 0) {
		int32_t type;
		int idx = messip_receive(p.ch, &type, p.buf, MESSIP_MAX_MSGLEN,
					 RECV_IDLE_MS);

		if (idx == MESSIP_MSG_DISMISSED) {
			ends--;
			continue;
		}
		if (idx == MESSIP_MSG_TIMEOUT && g_stop)
			break;
		if (idx == -1) {
			rc = fail(s, mp_errno(), "messip_receive");
			break;
		}
		if (idx < 0)
			continue;
		if (messip_reply(p.ch, idx, 0, p.buf, p.ch->datalenr,
				 MESSIP_NOTIMEOUT) < 0) {
			rc = fail(s, mp_errno(), "messip_reply");
			break;
		}
		if (type == MSG_END)
			ends--;
	}
out:
	mp_close(&p, MP_SERVER);
	return rc;
}

/* The classic sync client, insisting on the same-host path. */
static int mp_shm_sync_client(struct trial *t, struct slot *s)
{
	struct mp_peer p;
	int32_t answer;
	int rc;

	if ((rc = mp_open(t, s, &p, MP_CLIENT, 0)) < 0)
		goto out;
	if (messip_channel_path(p.ch) != MESSIP_PATH_SHM) {
		rc = fail(s, EPROTONOSUPPORT, "same-host path not taken");
		goto out;
	}
	rc = run_ops(op_mp_send, &p, t->secs, WARMUP_OPS, true, s);
	if (rc < 0)
		rc = fail(s, -rc, "messip_send");
	else if (messip_send(p.ch, MSG_END, p.buf, 0, &answer, NULL, 0,
			     CALL_MS) != 0)
		rc = fail(s, mp_errno(), "messip_send (end)");
out:
	mp_close(&p, MP_CLIENT);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The table.                                                         */

static const struct trial_ops raw_pingpong = {
	.serve = raw_pingpong_serve,
	.client = raw_client,
	.raw = true,
	.latency = true,
};
static const struct trial_ops raw_stream = {
	.serve = raw_stream_serve,
	.client = raw_client,
	.raw = true,
	.stream = true,
};
static const struct trial_ops mp_sync = {
	.serve = mp_sync_serve,
	.client = mp_sync_client,
	.latency = true,
};
static const struct trial_ops mp_buffered = {
	.serve = mp_buffered_serve,
	.client = mp_buffered_client,
	.stream = true,
};
static const struct trial_ops mp_lookup_connect = {
	.serve = mp_lookup_serve,
	.client = mp_lookup_connect_client,
	.latency = true,
	.stop_signal = true,
};
static const struct trial_ops mp_lookup_missing = {
	.serve = mp_lookup_serve,
	.client = mp_lookup_missing_client,
	.latency = true,
	.stop_signal = true,
};

static const struct trial_ops bare_spin = {
	.serve = bare_spin_serve,
	.client = bare_spin_client,
	.raw = true,
	.bare = true,
	.latency = true,
	.pin = true,
};
static const struct trial_ops bare_futex = {
	.serve = bare_futex_serve,
	.client = bare_futex_client,
	.raw = true,
	.bare = true,
	.latency = true,
	.pin = true,
	.single = true,
};
static const struct trial_ops bare_ring = {
	.serve = bare_ring_serve,
	.client = bare_ring_client,
	.raw = true,
	.bare = true,
	.stream = true,
	.pin = true,
};
static const struct trial_ops mp_shm_sync = {
	.serve = mp_sync_serve,
	.client = mp_shm_sync_client,
	.latency = true,
	.shm = true,
	.pin = true,
};
static const struct trial_ops mp_shm_zc = {
	.serve = mp_zc_serve,
	.client = mp_zc_client,
	.latency = true,
	.shm = true,
	.pin = true,
};
static const struct trial_ops mp_shm_buffered = {
	.serve = mp_buffered_serve,
	.client = mp_buffered_client,
	.stream = true,
	.shm = true,
	.pin = true,
};
/* Several clients: unpinned, the scheduler places them. */
static const struct trial_ops mp_shm_many = {
	.serve = mp_many_serve,
	.client = mp_shm_sync_client,
	.latency = true,
	.shm = true,
};

static const int sync_sizes[] = {0, 64, 1024, 16384, 65536, -1};
static const int buffered_sizes[] = {64, 1024, -1};
static const int shm_buffered_sizes[] = {64, -1};
static const int shm_many_sizes[] = {64, -1};

/* Every row of the table; main() expands each over sizes and variants. */
_Static_assert(LOOKUP_SIZE == 32, "the legend names the look-up frame");

static const struct row_kind kinds[] = {
	{
		.name = "sync",
		.group = "sync",
		.legend =
			"sync: messip_send/receive/reply between two processes"
			" over TCP,\n"
			"  request and reply both SIZE bytes.  raw: TCP "
			"ping-pong, 4-byte\n"
			"  length prefix, TCP_NODELAY, blocking read/write.  "
			"p50/p99: per\n"
			"  round trip.\n",
		.raw = &raw_pingpong,
		.messip = &mp_sync,
		.sized = true,
		.default_sizes = sync_sizes,
		.nvariants = 1,
		.variants = {{1, 1}},
	},
	{
		.name = "buffered",
		.group = "buffered",
		.legend =
			"buffered: messip_buffered_send from one process, "
			"through the manager\n"
			"  (wrk workers), to messip_receive (NOREPLY) in "
			"another, counted at\n"
			"  the receiver from the first message to the last; "
			"every message\n"
			"  sent is checked to arrive.  raw: one process writes "
			"length-prefixed\n"
			"  frames (one write each, TCP_NODELAY), the other "
			"reads them in\n"
			"  256 KiB chunks.\n",
		.raw = &raw_stream,
		.messip = &mp_buffered,
		.sized = true,
		.default_sizes = buffered_sizes,
		.nvariants = 2,
		.variants = {{1, 1}, {2, 1}},
	},
	{
		.name = "lookup-connect",
		.group = "lookup",
		.legend =
			"lookup-connect: messip_channel_connect + "
			"messip_channel_disconnect\n"
			"  of an existing channel in a loop, in cli processes "
			"at once.\n",
		.raw = &raw_pingpong,
		.messip = &mp_lookup_connect,
		.nvariants = 3,
		.variants = {{1, 1}, {1, 2}, {2, 2}},
	},
	{
		.name = "lookup-enoent",
		.group = "lookup",
		.legend =
			"lookup-enoent: messip_channel_connect of a missing "
			"name (ENOENT).\n"
			"  raw for both look-ups: cli independent TCP "
			"ping-pong "
			"pairs of\n"
			"  32-byte frames (a look-up needs at least one round "
			"trip).\n",
		.raw = &raw_pingpong,
		.messip = &mp_lookup_missing,
		.nvariants = 3,
		.variants = {{1, 1}, {1, 2}, {2, 2}},
	},
	{
		.name = "shm-sync",
		.group = "shm",
		.legend =
			"shm-sync: messip_send/receive/reply (the copying "
			"API) between two\n"
			"  processes of one host: the same-host fast path "
			"(channel segment),\n"
			"  server on CPU 0, client on CPU 1.  raw: bare "
			"spinning ping-pong\n"
			"  on shared memory, SIZE bytes copied each way on "
			"each side as the\n"
			"  copying API does.  Target: >= 33% at 0-64 B.\n",
		.raw = &bare_spin,
		.messip = &mp_shm_sync,
		.sized = true,
		.default_sizes = sync_sizes,
		.nvariants = 1,
		.variants = {{1, 1}},
	},
	{
		.name = "shm-zerocopy",
		.group = "shm",
		.legend =
			"shm-zerocopy: messip_buffer_loan + messip_send_view "
			"against\n"
			"  messip_receive_view + messip_reply of the view: "
			"nothing copied.\n"
			"  raw: the copying API on the same path (shm-sync's "
			"messip side).\n"
			"  Target: >= 1000% at 64K.\n",
		/* The classic API on the fast path: the zero-copy baseline. */
		.raw = &mp_shm_sync,
		.messip = &mp_shm_zc,
		.sized = true,
		.default_sizes = sync_sizes,
		.nvariants = 1,
		.variants = {{1, 1}},
	},
	{
		.name = "shm-buffered",
		.group = "shm",
		.legend =
			"shm-buffered: messip_buffered_send to a server of "
			"the same host\n"
			"  (straight into the sender's lane of its segment, "
			"no manager),\n  counted at the receiver.  raw: a "
			"bare single-producer single-consumer\n"
			"  ring of 128-byte cells on shared memory.  Target: "
			">= 50%.\n",
		.raw = &bare_ring,
		.messip = &mp_shm_buffered,
		.sized = true,
		.default_sizes = shm_buffered_sizes,
		.nvariants = 1,
		.variants = {{1, 1}},
	},
	{
		.name = "shm-4clients",
		.group = "shm",
		.legend =
			"shm-4clients: 4 client processes against 1 server "
			"on the fast path,\n"
			"  unpinned; rates summed.  raw: ONE bare ping-pong "
			"pair that sleeps\n"
			"  on a futex between messages (the wake-up cost).  "
			"Target: >= 100%.\n",
		.raw = &bare_futex,
		.messip = &mp_shm_many,
		.sized = true,
		.default_sizes = shm_many_sizes,
		.nvariants = 1,
		.variants = {{1, 4}},
	},
};

/* ------------------------------------------------------------------ */
/* The manager.                                                       */

static int mgr_write_conf(struct mgr *m, int workers)
{
	FILE *f = fopen(m->conf, "w");

	if (!f)
		return -errno;
	fprintf(f, "# messip-bench, pid %ld\n", (long)getpid());
	fprintf(f, "listen 127.0.0.1:%d\n", m->port);
	fprintf(f, "status_listen off\n");
	fprintf(f, "workers %d\n", workers);
	fprintf(f, "log_level warning\n");
	return fclose(f) == 0 ? 0 : -errno;
}

static void mgr_exec(struct mgr *m)
{
	int fd = open(g_verbose ? "/dev/null" : m->log,
		      O_WRONLY | O_CREAT | O_TRUNC, 0600);

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != g_parent)
		_exit(127);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		if (!g_verbose)
			dup2(fd, STDERR_FILENO);
	}
	execl(g_mgr_bin, g_mgr_bin, "-f", "-c", m->conf, (char *)NULL);
	fprintf(stderr, "exec %s: %s\n", g_mgr_bin, strerror(errno));
	_exit(127);
}

static void mgr_show_log(const struct mgr *m)
{
	char line[256];
	FILE *f = fopen(m->log, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  manager: %s", line);
	fclose(f);
}

/*
 * Wait until it accepts: 0; -EADDRINUSE if it exited (worth another
 * port), -ENOEXEC if it could not be run, -ETIMEDOUT.
 */
static int mgr_wait_accepting(struct mgr *m)
{
	for (int waited = 0; waited < MGR_START_MS; waited += 10) {
		int fd = tcp_connect_local(m->port), status;

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
			m->pid = 0;
			return WIFEXITED(status) && WEXITSTATUS(status) == 127
				       ? -ENOEXEC
				       : -EADDRINUSE;
		}
		sleep_ms(10);
	}
	return -ETIMEDOUT;
}

/* Start a manager with `workers` workers on a free port (a few tries:
 * the port may be taken between choosing and binding it). */
static int mgr_start(struct mgr *m, int workers)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		int fd = tcp_listen_local(&m->port), rc;

		if (fd < 0)
			return fd;
		close(fd);
		snprintf(m->conf, sizeof(m->conf),
			 "/tmp/messip-bench-%ld-w%d.conf", (long)getpid(),
			 workers);
		snprintf(m->log, sizeof(m->log),
			 "/tmp/messip-bench-%ld-w%d.log", (long)getpid(),
			 workers);
		snprintf(m->ref, sizeof(m->ref), "127.0.0.1:%d", m->port);
		if (mgr_write_conf(m, workers) < 0)
			return -errno;
		fflush(NULL);
		m->pid = fork();
		if (m->pid < 0)
			return -errno;
		if (m->pid == 0)
			mgr_exec(m);
		rc = mgr_wait_accepting(m);
		if (rc == 0)
			return 0;
		mgr_show_log(m);
		mgr_kill(m);
		if (rc != -EADDRINUSE)
			return rc;
	}
	return -ECONNREFUSED;
}

/* The manager with that many workers, started on first use. */
static const char *mgr_ref(int workers)
{
	struct mgr *m = &g_mgrs[workers];

	if (m->pid > 0)
		return m->ref;
	if (m->failed)
		return NULL;
	watchdog_arm(MGR_START_MS / 1000 * 3 + 10);
	if (mgr_start(m, workers) < 0) {
		fprintf(stderr,
			"messip-bench: cannot start %s with %d "
			"worker(s)\n",
			g_mgr_bin, workers);
		m->failed = true;
		return NULL;
	}
	return m->ref;
}

/* ------------------------------------------------------------------ */
/* Trials.                                                            */

static void kid_add(pid_t pid)
{
	for (int i = 0; i < MAX_KIDS; i++)
		if (g_kids[i] == 0) {
			g_kids[i] = pid;
			return;
		}
}

static void kid_forget(pid_t pid)
{
	for (int i = 0; i < MAX_KIDS; i++)
		if (g_kids[i] == pid)
			g_kids[i] = 0;
}

/* Fork a trial process running fn; returns its pid or -errno. */
static pid_t trial_spawn(struct trial *t,
			 int (*fn)(struct trial *, struct slot *),
			 struct slot *s, int ready_rd)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid != 0) {
		if (pid > 0)
			kid_add(pid);
		return pid < 0 ? -errno : pid;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != g_parent)
		_exit(3);
	set_handler(SIGTERM, on_stop_request, SA_RESTART);
	set_handler(SIGINT, SIG_DFL, 0);
	set_handler(SIGHUP, SIG_DFL, 0);
	set_handler(SIGALRM, SIG_DFL, 0);
	/* A backstop only: the parent's deadlines come first. */
	alarm((unsigned)t->secs + 3 * TRIAL_SLACK_S);
	if (ready_rd >= 0)
		close(ready_rd);
	/* Which path a messip trial measures: the same-host fast path only
	 * where the row says so, TCP everywhere else. */
	if (!t->ops->raw) {
		if (t->ops->shm)
			unsetenv("MESSIP_NO_SHM");
		else
			setenv("MESSIP_NO_SHM", "1", 1);
	}
	if (t->ops->pin)
		pin_cpu(fn == t->ops->serve ? 0 : 1);
	s->rc = fn(t, s);
	_exit(s->rc < 0 ? 1 : 0);
}

/* Wait for n ready bytes; false if a server ended or the deadline passed. */
static bool trial_wait_ready(int fd, int n)
{
	char c;

	while (n > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int rc = poll(&pfd, 1, READY_MS);

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0 || read(fd, &c, 1) != 1)
			return false;
		n--;
	}
	return true;
}

/* Reap pids[0..n-1] by the deadline; true when all ended with status 0. */
static bool trial_reap(pid_t *pids, int n, const char *role, uint64_t deadline,
		       char *err, size_t errlen)
{
	bool ok = true;

	for (int i = 0; i < n; i++) {
		int status = 0;
		int64_t left = (int64_t)(deadline - now_ns()) / 1000000;

		if (pids[i] <= 0)
			continue;
		if (!reap_within(pids[i], left > 0 ? (int)left : 0, &status)) {
			kill(pids[i], SIGKILL);
			reap_within(pids[i], 1000, NULL);
			snprintf(err, errlen, "%s did not finish in time",
				 role);
			ok = false;
		} else if (WIFSIGNALED(status)) {
			snprintf(err, errlen, "%s died of signal %d", role,
				 WTERMSIG(status));
			ok = false;
		} else if (WEXITSTATUS(status) != 0) {
			snprintf(err, errlen, "%s exited with %d", role,
				 WEXITSTATUS(status));
			ok = false;
		}
		kid_forget(pids[i]);
		pids[i] = 0;
	}
	return ok;
}

static double slots_rate(const struct slot *s, int n, uint64_t *count)
{
	double rate = 0;

	*count = 0;
	for (int i = 0; i < n; i++) {
		*count += s[i].ops;
		if (s[i].ns > 0)
			rate += s[i].ops * 1e9 / s[i].ns;
	}
	return rate;
}

/*
 * Turn what the processes wrote into a measure.  A process's own error
 * explains more than how it ended (reap_err), so it wins.
 */
static void trial_collect(struct trial *t, struct slot *slots, int nservers,
			  const char *reap_err, struct measure *m)
{
	struct slot *servers = slots, *clients = slots + nservers;
	int nclients = t->nclients;
	uint64_t sent, received;

	for (int i = 0; i < nservers + nclients; i++)
		if (slots[i].rc < 0 && !m->err[0])
			snprintf(m->err, sizeof(m->err), "%s", slots[i].err);
	if (!m->err[0] && reap_err[0])
		snprintf(m->err, sizeof(m->err), "%s", reap_err);
	if (m->err[0])
		return;
	if (t->ops->stream) {
		m->rate = slots_rate(servers, nservers, &received);
		slots_rate(clients, nclients, &sent);
		if (received != sent)
			snprintf(m->err, sizeof(m->err),
				 "received %llu of %llu messages",
				 (unsigned long long)received,
				 (unsigned long long)sent);
	} else {
		m->rate = slots_rate(clients, nclients, &sent);
	}
	if (t->ops->latency)
		m->has_lat =
			percentiles(clients, nclients, &m->p50_us, &m->p99_us);
	m->done = !m->err[0];
}

/* Fork servers, wait until ready, fork clients, collect. */
static void trial_processes(struct trial *t, struct slot *slots, int nservers,
			    struct measure *m)
{
	pid_t servers[MAX_CLIENTS] = {0}, clients[MAX_CLIENTS] = {0};
	char reap_err[sizeof(m->err)] = "";
	uint64_t deadline;
	bool ready_ok, ok;
	int ready[2];

	if (pipe2(ready, O_CLOEXEC) < 0) {
		snprintf(m->err, sizeof(m->err), "pipe: %s", strerror(errno));
		return;
	}
	t->ready_fd = ready[1];
	for (int i = 0; i < nservers; i++)
		servers[i] = trial_spawn(t, t->ops->serve, &slots[i], ready[0]);
	close(ready[1]);
	t->ready_fd = -1;
	ready_ok = trial_wait_ready(ready[0], nservers);
	if (ready_ok) {
		for (int i = 0; i < t->nclients; i++)
			clients[i] =
				trial_spawn(t, t->ops->client,
					    &slots[nservers + i], ready[0]);
	} else {
		snprintf(reap_err, sizeof(reap_err), "servers not ready");
	}
	close(ready[0]);
	deadline = now_ns() + (uint64_t)((t->secs + TRIAL_SLACK_S) * 1e9);
	ok = trial_reap(clients, t->nclients, "client", deadline, reap_err,
			sizeof(reap_err)) &&
	     ready_ok;
	/*
	 * Stop the servers that wait for it, and all of them when a client
	 * failed; otherwise they end by their input (end of stream,
	 * MSG_END) and a signal must not disturb one still draining.
	 */
	for (int i = 0; (t->ops->stop_signal || !ok) && i < nservers; i++)
		if (servers[i] > 0)
			kill(servers[i], SIGTERM);
	deadline = now_ns() + TRIAL_SLACK_S * 1000000000ull;
	trial_reap(servers, nservers, "server", deadline, reap_err,
		   sizeof(reap_err));
	trial_collect(t, slots, nservers, reap_err, m);
}

/* One measurement of a cell with the given ops into m. */
static void trial_run(const struct cell *c, const struct trial_ops *ops,
		      double secs, struct measure *m)
{
	static int serial;
	int nclients = ops->single ? 1 : c->clients;
	int nservers = ops->raw ? nclients : 1;
	size_t maplen = sizeof(struct slot) * (size_t)(nservers + nclients);
	struct trial t = {.cell = c,
			  .ops = ops,
			  .secs = secs,
			  .listen_fd = -1,
			  .ready_fd = -1,
			  .nclients = nclients};
	struct slot *slots;

	memset(m, 0, sizeof(*m));
	if (!ops->raw && !(t.mgr_ref = mgr_ref(c->workers))) {
		snprintf(m->err, sizeof(m->err), "no manager");
		return;
	}
	if (ops->raw && !ops->bare &&
	    (t.listen_fd = tcp_listen_local(&t.port)) < 0) {
		snprintf(m->err, sizeof(m->err), "listen: %s",
			 strerror(-t.listen_fd));
		return;
	}
	if (ops->bare) {
		t.map = mmap(NULL, sizeof(struct bare) * (size_t)nservers,
			     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);
		if (t.map == MAP_FAILED) {
			snprintf(m->err, sizeof(m->err), "mmap: %s",
				 strerror(errno));
			return;
		}
	}
	snprintf(t.chname, sizeof(t.chname), "bench-%ld-%d", (long)getpid(),
		 ++serial);
	snprintf(t.missing, sizeof(t.missing), "bench-%ld-missing",
		 (long)getpid());
	slots = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED) {
		snprintf(m->err, sizeof(m->err), "mmap: %s", strerror(errno));
	} else {
		watchdog_arm((unsigned)secs + 4 * TRIAL_SLACK_S);
		t.slots_base = slots;
		t.nservers = nservers;
		trial_processes(&t, slots, nservers, m);
		munmap(slots, maplen);
	}
	if (t.listen_fd >= 0)
		close(t.listen_fd);
	if (ops->bare)
		munmap(t.map, sizeof(struct bare) * (size_t)nservers);
}

/* Keep a side's best round; a failure in any round sticks. */
static void keep_best(struct measure *best, const struct measure *m, int round)
{
	if (round == 0 || !m->done || (best->done && m->rate > best->rate))
		*best = *m;
}

/*
 * Alternate raw and messip ROUNDS times, secs/ROUNDS each, and keep the
 * best round of each side: alternating cancels drift in the machine's
 * load, and the best round filters out interference, which only ever
 * slows a round down, the same way on both sides.
 */
static void cell_run(struct cell *c, double secs, bool mp)
{
	for (int r = 0; r < ROUNDS; r++) {
		struct measure m;

		if (r == 0 || c->raw.done) {
			trial_run(c, c->kind->raw, secs / ROUNDS, &m);
			keep_best(&c->raw, &m, r);
		}
		if (mp && (r == 0 || c->mp.done)) {
			trial_run(c, c->kind->messip, secs / ROUNDS, &m);
			keep_best(&c->mp, &m, r);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Output.                                                            */

static void fmt_size(char *buf, size_t len, const struct cell *c)
{
	if (!c->kind->sized)
		snprintf(buf, len, "-");
	else if (c->size >= 1024 && c->size % 1024 == 0)
		snprintf(buf, len, "%dK", c->size / 1024);
	else
		snprintf(buf, len, "%d", c->size);
}

static void print_measure(const struct measure *m, bool ran)
{
	if (!ran)
		printf(" | %10s %7s %7s", "-", "", "");
	else if (!m->done)
		printf(" | %10s %7s %7s", "FAILED", "", "");
	else if (m->has_lat)
		printf(" | %10.0f %7.1f %7.1f", m->rate, m->p50_us, m->p99_us);
	else
		printf(" | %10.0f %7s %7s", m->rate, "-", "-");
}

static void print_header(int argc, char **argv, double secs)
{
	struct utsname u;

	uname(&u);
	printf("messip-bench: %s %s %s, nproc %ld\n", u.sysname, u.release,
	       u.machine, sysconf(_SC_NPROCESSORS_ONLN));
	printf("each cell: %.2f s raw and %.2f s messip, alternating in %d "
	       "rounds; best round shown\n",
	       secs, secs, ROUNDS);
	printf("command:");
	for (int i = 0; i < argc; i++)
		printf(" %s", argv[i]);
	printf("\nmanager: %s\n\n", g_mgr_bin);
	printf("%-14s %4s %3s %3s | %10s %7s %7s | %10s %7s %7s | %s\n", "test",
	       "size", "wrk", "cli", "raw/s", "p50us", "p99us", "messip/s",
	       "p50us", "p99us", "messip/raw");
}

static void print_row(const struct cell *c, bool raw, bool mp)
{
	char size[16];

	fmt_size(size, sizeof(size), c);
	printf("%-14s %4s %3d %3d", c->kind->name, size, c->workers,
	       c->clients);
	print_measure(&c->raw, raw);
	print_measure(&c->mp, mp);
	if (c->raw.done && c->mp.done && c->raw.rate > 0)
		printf(" | %5.0f%%", 100.0 * c->mp.rate / c->raw.rate);
	else
		printf(" | %6s", "-");
	printf("\n");
	if (raw && !c->raw.done)
		printf("    raw: %s\n", c->raw.err);
	if (mp && !c->mp.done)
		printf("    messip: %s\n", c->mp.err);
	fflush(stdout);
}

/* Each kind's legend once, for the kinds that ran. */
static void print_legend(const struct cell *cells, int n)
{
	printf("\n");
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		for (int i = 0; i < n; i++)
			if (cells[i].kind == &kinds[k]) {
				printf("%s", kinds[k].legend);
				break;
			}
	printf("messip/raw: rate ratio against the raw run measured just "
	       "before it.\n");
}

/* ------------------------------------------------------------------ */
/* Plan and main.                                                     */

struct options {
	double secs;
	int sizes[MAX_SIZES + 1]; /* -1 terminated; [0] < 0: default */
	const char *only;	  /* NULL, or a group, or "raw" */
};

static int parse_sizes(const char *arg, int *sizes)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	int n = 0;

	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long v = strtol(tok, &end, 10);

		if (*end == 'k' || *end == 'K') {
			v *= 1024;
			end++;
		}
		if (end == tok || *end || v < 0 || v > MESSIP_MAX_MSGLEN ||
		    n == MAX_SIZES) {
			free(copy);
			return -EINVAL;
		}
		sizes[n++] = (int)v;
	}
	sizes[n] = -1;
	free(copy);
	return n > 0 ? 0 : -EINVAL;
}

static bool wants(const struct options *o, const struct row_kind *k)
{
	return !o->only || !strcmp(o->only, "raw") ||
	       !strcmp(o->only, k->group);
}

/* The sizes a kind runs at: -s, its defaults, or the look-up frame. */
static const int *kind_sizes(const struct options *o, const struct row_kind *k)
{
	static const int unsized[] = {LOOKUP_SIZE, -1};

	if (!k->sized)
		return unsized;
	return o->sizes[0] >= 0 ? o->sizes : k->default_sizes;
}

/* Expand the kinds over sizes and variants into cells[]; returns count. */
static int plan_build(const struct options *o, struct cell *cells, int max)
{
	int n = 0;

	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		const struct row_kind *kind = &kinds[k];
		const int *sizes = kind_sizes(o, kind);

		if (!wants(o, kind))
			continue;
		for (int s = 0; sizes[s] >= 0; s++)
			for (int v = 0; v < kind->nvariants && n < max; v++)
				cells[n++] = (struct cell){
					.kind = kind,
					.size = sizes[s],
					.workers = kind->variants[v].workers,
					.clients = kind->variants[v].clients,
				};
	}
	return n;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: messip-bench [-t SECONDS] [-s SIZES] [-q] [-v]\n"
		   "                    [--only sync|buffered|lookup|shm|raw]\n"
		   "  -t SECONDS  time per cell and side (default 1)\n"
		   "  -s SIZES    message sizes for sync and buffered, e.g. "
		   "0,64,1K,16K,64K\n"
		   "  -q          quick: 0.3 s per cell and side\n"
		   "  -v          let the manager log to stderr\n"
		   "  --only X    one group, or raw: only the baselines\n"
		   "The manager is $MP_MGR_BIN (default ./mgrd/messip-mgr).\n");
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{"only", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	o->secs = 1.0;
	o->sizes[0] = -1;
	o->only = NULL;
	while ((c = getopt_long(argc, argv, "t:s:qvh", longs, NULL)) != -1) {
		switch (c) {
		case 't':
			o->secs = strtod(optarg, NULL);
			if (!(o->secs >= 0.05 && o->secs <= 60))
				return -EINVAL;
			break;
		case 's':
			if (parse_sizes(optarg, o->sizes) < 0)
				return -EINVAL;
			break;
		case 'q':
			o->secs = 0.3;
			break;
		case 'v':
			g_verbose = true;
			break;
		case 'o':
			if (strcmp(optarg, "sync") &&
			    strcmp(optarg, "buffered") &&
			    strcmp(optarg, "lookup") && strcmp(optarg, "shm") &&
			    strcmp(optarg, "raw"))
				return -EINVAL;
			o->only = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -EINVAL;
		}
	}
	return optind == argc ? 0 : -EINVAL;
}

static void install_parent_handlers(void)
{
	set_handler(SIGINT, on_fatal_signal, 0);
	set_handler(SIGTERM, on_fatal_signal, 0);
	set_handler(SIGHUP, on_fatal_signal, 0);
	set_handler(SIGALRM, on_fatal_signal, 0);
	set_handler(SIGPIPE, SIG_IGN, 0);
}

int main(int argc, char **argv)
{
	struct cell cells[64];
	struct options o;
	bool all_ok = true;
	int n;

	if (parse_options(argc, argv, &o) < 0) {
		usage(stderr);
		return 2;
	}
	g_parent = getpid();
	g_mgr_bin = getenv("MP_MGR_BIN");
	if (!g_mgr_bin || !*g_mgr_bin)
		g_mgr_bin = "./mgrd/messip-mgr";
	install_parent_handlers();
	n = plan_build(&o, cells, (int)(sizeof(cells) / sizeof(cells[0])));
	print_header(argc, argv, o.secs);
	for (int i = 0; i < n; i++) {
		struct cell *c = &cells[i];
		bool mp = !o.only || strcmp(o.only, "raw");

		cell_run(c, o.secs, mp);
		print_row(c, true, mp);
		all_ok = all_ok && c->raw.done && (!mp || c->mp.done);
	}
	watchdog_arm(30);
	for (int w = 0; w <= MAX_WORKERS; w++)
		mgr_kill(&g_mgrs[w]);
	watchdog_arm(0);
	print_legend(cells, n);
	return all_ok ? 0 : 1;
}
