/*
 * mp_local — the same-host fast path and the zero-copy calls (see
 * mp_local.h for the design: naming, the two ways the server sleeps, who
 * reports client deaths).
 *
 * Threads: everything here runs in the thread that uses the channel,
 * except helper_main() (one per server channel with a segment).  What
 * the two share is listed in struct mp_local under "shared with the
 * helper"; every access to those fields is an __atomic builtin, and each
 * ordering choice is commented where it is made.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "messip.h"
#include "mp_alloc.h"
#include "mp_chan.h"
#include "mp_chseg.h"
#include "mp_cli.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_futex.h"
#include "mp_host.h"
#include "mp_inproc.h"
#include "mp_local.h"
#include "mp_log.h"
#include "mp_shm.h"
#include "mp_srv.h"
#include "mp_time.h"

#define SEG_DIR	       "/dev/shm"
#define SEG_PREFIX     "messip-ch-"
#define MP_LOCAL_LOANS 8	    /* client loans outstanding per handle */
#define PING_BIT       (1ULL << 63) /* request id of a ping (never shown) */
#define PUMP_NS	       100000000LL  /* client: look at the manager link */
#define ALIVE_NS       10000000LL   /* client: buffered sends check server */
#define REAP_TICK_NS   100000000LL  /* server: look for dead clients */
#define REAP_AFTER_NS  1000000000LL /* ... this long after a peer left */
#define HUP_CHECK_NS   1000000LL    /* held longer: check the client */
#define HELPER_STACK   (256 * 1024)
#define RING_DEFAULT   256	 /* the manager's default_buffered */
#define RING_MAX       (1 << 20) /* the manager's cap */

/*
 * The helper's state word, which it also sleeps on (a futex), so that
 * every change of its task wakes it: IDLE/ARMED/FIRED in mode L (the
 * watcher idle, watching the epoll, or having found it ready), FD in fd
 * mode (for good), STOP at close.
 */
enum { ARM_IDLE = 0, ARM_ARMED, ARM_FIRED, ARM_STOP, ARM_FD };

/* A local request handed to the program, until its reply. */
struct mp_local_held {
	uint64_t ticket;  /* mp_chseg's name for it */
	int index;	  /* receive index, -1 when not handed out */
	bool heap;	  /* orphaned copy (its slot was reset) */
	bool gone;	  /* its client died (reply: ESRCH) */
	int64_t since_ns; /* coarse clock: posted no earlier than this */
	int32_t type;
	uint32_t len;
	const void *data; /* the request's view in the segment */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int cred; /* MP_CHSEG_CRED_CHECKED or 0 */
	char id[MESSIP_MAXLEN_ID + 1];
};

/* A client's loaned buffer. */
struct mp_loan {
	void *buf; /* NULL: entry free */
	size_t len;
	bool seg; /* a slot of the segment (else malloc'ed) */
	struct mp_chseg_req r;
};

/* A server's loaned reply buffer on the TCP path (or for a withdrawn
 * request): malloc'ed, freed by the reply. */
struct mp_rloan {
	int index;
	void *buf;
};

struct mp_local {
	mp_chseg_t *seg; /* NULL: TCP path (the struct then only holds
			    zero-copy bookkeeping) */
	char name[MP_SHM_NAME_MAX];
	bool server;
	pid_t pid; /* the process it belongs to (see mp_local_close) */

	/* Server. */
	struct mp_local_held held[MP_CHSEG_MAX_SLOTS];
	int pend;   /* held[] slot taken but not handed out (ENOMEM) */
	bool bpend; /* a popped buffered message waits in scratch */
	struct mp_ring_rec bmeta;
	bool ring_turn;	   /* look at the ring before the slots */
	bool ring_more;	   /* the last pop found a record */
	bool idle;	   /* the last take found nothing */
	unsigned takes;
	bool queue_turn;   /* mp_local_turn: the TCP queue goes first */
	bool view_mode;	   /* messip_receive_view: do not copy requests */
	uint8_t *scratch;  /* MESSIP_MAX_MSGLEN bytes, lazily */
	int64_t last_reap; /* coarse clock */
	int64_t last_check;
	int64_t scan_ns;   /* coarse clock: the slots last found empty */
	struct mp_rloan *rloans;
	int nrloans;
	struct mp_src lsrc; /* localfd in the channel's epoll */

	/* Shared with the helper thread (atomics only). */
	uint32_t arm;	    /* futex word: ARM_* */
	uint32_t fdmode;    /* 1 once messip_channel_fd was called (arm is
			       then ARM_FD or ARM_STOP) */
	uint32_t posted;    /* localfd written, not yet drained */
	int32_t npeers;	    /* same-host clients linked */
	int64_t reap_until; /* a peer left: look for the dead until then */
	uint32_t bell0;	    /* bell when fd mode began */
	/* Set before the thread starts, constant while it runs. */
	int epfd, hep, ctlfd, localfd;
	bool thr_started;
	uint32_t running; /* set by the helper once it runs (futex word) */
	pthread_t thr;

	/* Client. */
	bool cand;   /* the server may share our host: not yet decided */
	bool tried;  /* its segment was tried */
	bool on_seg; /* decided: we use the segment */
	bool gone;   /* the server is gone: every call ESRCH */
	pid_t srv_pid;
	uint64_t srv_host;
	int32_t ident_regno;
	bool ident_set;
	int64_t last_pump; /* coarse clock */
	int64_t last_alive;
	uint64_t reqid;
	struct mp_loan loans[MP_LOCAL_LOANS];
	bool has_view;	      /* a reply view is out ... */
	bool view_seg;	      /* ... in a slot (view) or in view_buf */
	const void *view_ptr; /* what the program was given */
	struct mp_chseg_req view;
	void *view_buf; /* TCP: where send_view's reply lands */
};

/* ------------------------------------------------------------------ */
/* Small helpers.                                                      */

/* A cheap clock (no system call, a few ns, ~4 ms resolution): for the
 * periodic chores only, never for a caller's deadline. */
static int64_t coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool no_shm(void)
{
	const char *v = getenv("MESSIP_NO_SHM");

	return v && *v && strcmp(v, "0") != 0;
}

static struct mp_local *local_get(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;

	if (L)
		return L;
	L = mp_calloc(1, sizeof(*L));
	if (!L)
		return NULL;
	L->server = c->server;
	L->pid = getpid();
	L->pend = -1;
	L->idle = true;
	L->epfd = L->hep = L->ctlfd = L->localfd = -1;
	for (int i = 0; i < MP_CHSEG_MAX_SLOTS; i++)
		L->held[i].index = -1;
	c->local = L;
	return L;
}

static uint8_t *scratch(struct mp_local *L)
{
	if (!L->scratch)
		L->scratch = mp_alloc(MESSIP_MAX_MSGLEN);
	return L->scratch;
}

/* The port of "ip:port" / "[v6]:port", 0 if none. */
static unsigned addr_port(const char *addr)
{
	const char *p = strrchr(addr, ':');
	char *end;
	unsigned long v;

	if (!p)
		return 0;
	v = strtoul(p + 1, &end, 10);
	return (*end && *end != '/') || v > 65535 ? 0 : (unsigned)v;
}

/* The segment's name (see mp_local.h).  0 or -ENAMETOOLONG. */
static int seg_name(char *out, size_t outsz, uint64_t token, pid_t pid,
		    unsigned port, const char *chname)
{
	int n = snprintf(out, outsz, "/" SEG_PREFIX "%016llx-%ld-%u-",
			 (unsigned long long)token, (long)pid, port);
	size_t len;

	if (n < 0 || (size_t)n >= outsz)
		return -ENAMETOOLONG;
	len = (size_t)n;
	for (const char *p = chname; *p && len + 1 < outsz; p++) {
		char ch = *p;
		bool ok = (ch >= 'a' && ch <= 'z') ||
			  (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
			  ch == '-';

		out[len++] = ok ? ch : '_';
	}
	out[len] = '\0';
	return 0;
}

/* ------------------------------------------------------------------ */
/* Names this process created: unlinked at exit() too.                 */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static struct reg_ent {
	pid_t pid;
	char name[MP_SHM_NAME_MAX];
} * reg;
static int nreg, capreg;
static bool swept;

static void reg_atexit(void)
{
	pid_t me = getpid();

	pthread_mutex_lock(&reg_mu);
	/* A forked child inherits the list: only the creator unlinks. */
	for (int i = 0; i < nreg; i++)
		if (reg[i].pid == me)
			mp_shm_unlink(reg[i].name);
	pthread_mutex_unlock(&reg_mu);
}

static void reg_init(void)
{
	atexit(reg_atexit);
}

static void reg_add(const char *name)
{
	pthread_once(&reg_once, reg_init);
	pthread_mutex_lock(&reg_mu);
	if (nreg == capreg) {
		int n = capreg ? capreg * 2 : 8;
		struct reg_ent *r = mp_realloc(reg, sizeof(*r) * (size_t)n);

		if (!r)
			goto out;
		reg = r;
		capreg = n;
	}
	reg[nreg].pid = getpid();
	snprintf(reg[nreg].name, sizeof(reg[nreg].name), "%s", name);
	nreg++;
out:
	pthread_mutex_unlock(&reg_mu);
}

static void reg_remove(const char *name)
{
	pid_t me = getpid();

	pthread_mutex_lock(&reg_mu);
	for (int i = 0; i < nreg; i++) {
		if (reg[i].pid == me && strcmp(reg[i].name, name) == 0) {
			reg[i] = reg[--nreg];
			break;
		}
	}
	pthread_mutex_unlock(&reg_mu);
}

/* Open name: -ESRCH means its server died without closing it (the name
 * is stale and may go); 0 means a live server has it. */
static int probe(const char *name)
{
	mp_chseg_t *t = mp_alloc(sizeof(*t));
	int rc;

	if (!t)
		return -ENOMEM;
	rc = mp_chseg_open(t, name);
	if (rc == 0)
		mp_chseg_close(t);
	free(t);
	return rc;
}

/*
 * Once per process: unlink the segments of this host's servers that died
 * without closing them (SIGKILL, _exit).  Only names whose pid is not
 * running here are opened, and only those whose open says "server gone"
 * go (a server in another PID namespace answers -EXDEV and stays).
 */
static void sweep_stale(uint64_t token)
{
	char prefix[64], name[sizeof(((struct dirent *)0)->d_name) + 2];
	struct dirent *de;
	DIR *d;

	pthread_mutex_lock(&reg_mu);
	if (swept) {
		pthread_mutex_unlock(&reg_mu);
		return;
	}
	swept = true;
	pthread_mutex_unlock(&reg_mu);
	snprintf(prefix, sizeof(prefix), SEG_PREFIX "%016llx-",
		 (unsigned long long)token);
	d = opendir(SEG_DIR);
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			continue;
		pid = strtol(de->d_name + strlen(prefix), &end, 10);
		if (*end != '-' || pid <= 0 || pid == (long)getpid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(name, sizeof(name), "/%s", de->d_name);
		if (strlen(name) >= MP_SHM_NAME_MAX)
			continue;
		if (probe(name) == -ESRCH) {
			mp_shm_unlink(name);
			mp_log(MESSIP_LOG_INFO, "MESSIP-SHM-STALE",
			       "removed %s: its server is gone", name);
		}
	}
	closedir(d);
}

/* ------------------------------------------------------------------ */
/* The helper thread (server).                                         */

static void post(struct mp_local *L)
{
	uint64_t one = 1;

	/* Seq_cst exchange: ordered after the bell load that found news,
	 * and pairs with the drain's store of 0 before its rescan (see
	 * drain_localfd): either we see 0 and write, or the drain's rescan
	 * happens after the client's publication. */
	if (!__atomic_exchange_n(&L->posted, 1, __ATOMIC_SEQ_CST))
		(void)!write(L->localfd, &one, sizeof(one));
}

static bool reap_wanted(struct mp_local *L, int64_t now)
{
	return __atomic_load_n(&L->npeers, __ATOMIC_RELAXED) > 0 ||
	       now < __atomic_load_n(&L->reap_until, __ATOMIC_RELAXED);
}

/* fd mode: sleep on the doorbell for the program, which sleeps in the
 * epoll; make localfd readable when the bell moves. */
static void bell_watch(struct mp_local *L)
{
	struct mp_chseg_hdr *h = L->seg->hdr;
	uint32_t seen = __atomic_load_n(&L->bell0, __ATOMIC_ACQUIRE);

	/* srv_waiters was raised on our behalf by mp_local_fd_mode, so
	 * every client rings from then on. */
	while (__atomic_load_n(&L->arm, __ATOMIC_ACQUIRE) != ARM_STOP) {
		uint32_t b = __atomic_load_n(&h->bell, __ATOMIC_SEQ_CST);
		int64_t now;

		if (b != seen) {
			seen = b;
			post(L);
		}
		now = mp_time_now_ns();
		/* Every tick while a slot is in use, the program's receive
		 * looks for dead clients (only its thread may reap). */
		if (mp_futex_wait(&h->bell, b, now + REAP_TICK_NS) ==
			    -ETIMEDOUT &&
		    reap_wanted(L, coarse_ns()) &&
		    mp_chseg_slots_in_use(L->seg))
			post(L);
	}
}

static void *helper_main(void *arg)
{
	struct mp_local *L = arg;
	struct epoll_event ev[2];

	/* Release: tell helper_start we are up. */
	__atomic_store_n(&L->running, 1, __ATOMIC_RELEASE);
	mp_futex_wake(&L->running, 1);
	for (;;) {
		uint32_t a = __atomic_load_n(&L->arm, __ATOMIC_ACQUIRE);
		uint64_t v;
		int n;

		if (a == ARM_STOP)
			break;
		if (a == ARM_FD) {
			bell_watch(L);
			continue;
		}
		if (a != ARM_ARMED) {
			mp_futex_wait(&L->arm, a, MP_TIME_FOREVER);
			continue;
		}
		n = epoll_wait(L->hep, ev, 2, -1);
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u32 == 2) {
				(void)!read(L->ctlfd, &v, sizeof(v));
				continue;
			}
			/* The channel's epoll is readable: hand it to the
			 * program's thread.  The CAS fails when the program
			 * disarmed or stopped us meanwhile. */
			a = ARM_ARMED;
			if (__atomic_compare_exchange_n(&L->arm, &a, ARM_FIRED,
							0, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE))
				mp_chseg_kick(L->seg);
		}
	}
	return NULL;
}

static void helper_ctl(struct mp_local *L)
{
	uint64_t one = 1;

	(void)!write(L->ctlfd, &one, sizeof(one));
	mp_futex_wake(&L->arm, INT32_MAX);
}

static int helper_start(struct mp_local *L, int epfd)
{
	struct epoll_event ev = {.events = EPOLLIN};
	pthread_attr_t attr;
	sigset_t all, old;
	int rc;

	L->epfd = epfd;
	L->hep = epoll_create1(EPOLL_CLOEXEC);
	L->ctlfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	L->localfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (L->hep < 0 || L->ctlfd < 0 || L->localfd < 0)
		return -errno;
	ev.data.u32 = 1;
	if (epoll_ctl(L->hep, EPOLL_CTL_ADD, epfd, &ev) < 0)
		return -errno;
	ev.data.u32 = 2;
	if (epoll_ctl(L->hep, EPOLL_CTL_ADD, L->ctlfd, &ev) < 0)
		return -errno;
	L->lsrc.kind = MP_SRC_WAKE; /* receive looks at everything anyway */
	ev.data.ptr = &L->lsrc;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, L->localfd, &ev) < 0)
		return -errno;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, HELPER_STACK);
	/* The helper takes no signal: the program's handlers run in its own
	 * threads, as they did before the library had one. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&L->thr, &attr, helper_main, L);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc)
		return -rc;
	L->thr_started = true;
	/* Return only once the thread runs: a program that forks right
	 * after creating a channel must not catch it half-started (inside
	 * the C library or a sanitizer's runtime, holding their locks). */
	while (!__atomic_load_n(&L->running, __ATOMIC_ACQUIRE))
		mp_futex_wait(&L->running, 0, MP_TIME_FOREVER);
	return 0;
}

/* Close the helper's descriptors (ours: a forked child's copies, or the
 * server's own after the helper stopped). */
static void helper_fds_close(struct mp_local *L)
{
	if (L->hep >= 0)
		close(L->hep);
	if (L->ctlfd >= 0)
		close(L->ctlfd);
	if (L->localfd >= 0)
		close(L->localfd);
	L->hep = L->ctlfd = L->localfd = -1;
}

static void helper_stop(struct mp_local *L)
{
	if (L->thr_started) {
		__atomic_store_n(&L->arm, ARM_STOP, __ATOMIC_RELEASE);
		helper_ctl(L);
		mp_chseg_kick(L->seg); /* out of bell_watch's futex */
		pthread_join(L->thr, NULL);
		L->thr_started = false;
	}
	if (L->localfd >= 0 && L->epfd >= 0)
		epoll_ctl(L->epfd, EPOLL_CTL_DEL, L->localfd, NULL);
	helper_fds_close(L);
}

/* ------------------------------------------------------------------ */
/* Server: create, close.                                              */

static int seg_create(mp_chseg_t *seg, const char *name,
		      const struct mp_chseg_cfg *cfg)
{
	int rc = mp_chseg_create(seg, name, cfg);

	if (rc != -EEXIST)
		return rc;
	/* Our own name taken: the leftover of a predecessor with our pid
	 * (SIGKILLed, or _exit without closing).  Its server gone, it may
	 * go; a live owner keeps it and we stay on TCP. */
	rc = probe(name);
	if (rc != -ESRCH && rc != -EBADMSG)
		return -EEXIST;
	mp_shm_unlink(name);
	return mp_chseg_create(seg, name, cfg);
}

int mp_local_srv_open(struct messip_channel_priv *c, int32_t maxbuf)
{
	struct messip_cnx *cnx = c->cnx;
	struct mp_chseg_cfg cfg;
	struct mp_local *L;
	char name[MP_SHM_NAME_MAX];
	size_t alen = strlen(c->addr);
	unsigned port = addr_port(c->addr);
	int rc;

	if (no_shm() || !cnx->my_host || !port)
		return 0;
	rc = seg_name(name, sizeof(name), cnx->my_host, getpid(), port,
		      c->pub->name);
	if (rc < 0)
		return rc;
	/* Room for "/<pid>" in the address the manager keeps. */
	if (alen + 12 > MP_WIRE_ADDR_MAX)
		return -ENAMETOOLONG;
	sweep_stale(cnx->my_host);
	L = local_get(c);
	if (!L)
		return -ENOMEM;
	L->seg = mp_calloc(1, sizeof(*L->seg));
	if (!L->seg)
		return -ENOMEM;
	memset(&cfg, 0, sizeof(cfg));
	/* Every slot the segment can have: a client with asynchronous
	 * requests holds one per request (tmpfs pages are only allocated
	 * for the slots ever used). */
	cfg.nslots = MP_CHSEG_MAX_SLOTS;
	cfg.max_msg = MESSIP_MAX_MSGLEN;
	cfg.ring_records =
		maxbuf > 0 ? (uint32_t)(maxbuf > RING_MAX ? RING_MAX : maxbuf)
			   : RING_DEFAULT;
	rc = seg_create(L->seg, name, &cfg);
	if (rc == 0) {
		snprintf(L->name, sizeof(L->name), "%s", name);
		reg_add(name);
		rc = helper_start(L, c->srv.epfd);
	}
	if (rc < 0) {
		mp_log(MESSIP_LOG_WARNING, "MESSIP-SHM-CREATE",
		       "channel %s: no same-host fast path (%s): %s",
		       c->pub->name, name, strerror(-rc));
		mp_local_close(c);
		return rc;
	}
	L->last_reap = coarse_ns();
	snprintf(c->addr + alen, sizeof(c->addr) - alen, "/%ld",
		 (long)getpid());
	mp_log(MESSIP_LOG_DEBUG, "MESSIP-SHM-CREATED", "channel %s: segment %s",
	       c->pub->name, name);
	return 0;
}

static void end_view(struct mp_local *L);

void mp_local_close(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;

	if (!L)
		return;
	if (L->pid != getpid()) {
		/* A forked child freeing what it inherited (messip.h: a
		 * connection belongs to one of the two processes).  The helper
		 * thread and the segment are the parent's: closing the segment
		 * here would tell every client the server is gone.  Let go of
		 * the mapping and the memory only. */
		if (L->seg && L->seg->shm.base)
			munmap(L->seg->shm.base, L->seg->shm.size);
		/* Our copies only: the parent's epoll keeps its entries. */
		helper_fds_close(L);
		if (L->seg && L->seg->srv_pidfd >= 0)
			close(L->seg->srv_pidfd);
		for (int i = 0; i < L->nrloans; i++)
			free(L->rloans[i].buf);
		free(L->rloans);
		free(L->view_buf);
		free(L->seg);
		free(L->scratch);
		free(L);
		c->local = NULL;
		return;
	}
	if (L->server) {
		helper_stop(L);
		if (L->seg) {
			/* Forget local indices: mp_srv_close frees the
			 * table, the segment's close tells their clients. */
			for (int i = 0; i < c->srv.nslots; i++) {
				struct mp_local_held *h = c->srv.slots[i].local;

				if (!h)
					continue;
				c->srv.slots[i].local = NULL;
				if (c->pub->receive_allmsg)
					c->pub->receive_allmsg[i] = NULL;
				if (h->heap)
					free(h);
			}
		}
		for (int i = 0; i < L->nrloans; i++)
			free(L->rloans[i].buf);
		free(L->rloans);
	} else {
		end_view(L);
		for (int i = 0; i < MP_LOCAL_LOANS; i++) {
			struct mp_loan *ln = &L->loans[i];

			if (!ln->buf)
				continue;
			if (ln->seg && L->seg)
				mp_chseg_done(L->seg, &ln->r);
			else if (!ln->seg)
				free(ln->buf);
			ln->buf = NULL;
		}
		free(L->view_buf);
	}
	if (L->seg) {
		if (L->seg->shm.base)
			mp_chseg_close(L->seg);
		if (L->name[0] && L->server)
			reg_remove(L->name);
		free(L->seg);
	}
	free(L->scratch);
	free(L);
	c->local = NULL;
}

/* ------------------------------------------------------------------ */
/* Server: taking requests and buffered messages.                      */

static void set_result(struct messip_channel_priv *c, const char *id,
		       size_t idmax, int32_t datalen, int32_t stored)
{
	messip_channel_t *pub = c->pub;
	size_t n = strnlen(id, idmax);

	memset(pub->remote_id, 0, sizeof(pub->remote_id));
	memcpy(pub->remote_id, id, n < MESSIP_MAXLEN_ID ? n : MESSIP_MAXLEN_ID);
	pub->datalen = datalen;
	pub->datalenr = stored;
}

static void maybe_reap(struct mp_local *L, int64_t now)
{
	if (now - L->last_reap < REAP_TICK_NS || !reap_wanted(L, now))
		return;
	L->last_reap = now;
	mp_chseg_reap(L->seg, 0);
}

/* Give held[slot] to the program: an index, the copy, the result. */
static int deliver(struct messip_channel_priv *c, struct mp_local *L, int slot,
		   int32_t *type, const struct mp_iov_sink *sink, int *result)
{
	struct mp_local_held *h = &L->held[slot];
	int idx = mp_srv_index_give(c, h->data, h->len, h->type, h->id, sink,
				    L->view_mode, type);

	L->pend = idx < 0 ? slot : -1; /* out, or next time */
	if (idx < 0)
		return idx;
	h->index = idx;
	c->srv.slots[idx].local = h;
	*result = idx;
	return 0;
}

/* held[slot] is still waiting for the program's reply but its slot was
 * reset and reused: move it aside (its reply then fails with ESRCH). */
static void orphan(struct messip_channel_priv *c, struct mp_local_held *h)
{
	struct mp_local_held *o = mp_alloc(sizeof(*o));

	if (o) {
		*o = *h;
		o->heap = true;
		o->gone = true;
		c->srv.slots[h->index].local = o;
	} else {
		/* Cannot keep it: the index awaits nothing any more. */
		c->srv.slots[h->index].local = NULL;
		c->pub->receive_allmsg[h->index] = NULL;
	}
	h->index = -1;
}

static struct mp_local_held *held_of(struct mp_local *L,
				     const struct mp_chseg_msg *m)
{
	struct mp_local_held *h;

	if (m->slot >= MP_CHSEG_MAX_SLOTS)
		return NULL;
	h = &L->held[m->slot];
	return h->index >= 0 && h->ticket == m->ticket ? h : NULL;
}

static int take_slot(struct messip_channel_priv *c, struct mp_local *L,
		     int32_t *type, const struct mp_iov_sink *sink, int *result)
{
	struct mp_chseg_msg m;
	struct mp_local_held *h;
	int rc;

	if (L->pend >= 0)
		return deliver(c, L, L->pend, type, sink, result);
	/* Bounded: every slot can produce an event or two per call. */
	for (int guard = 0; guard < 4 * MP_CHSEG_MAX_SLOTS; guard++) {
		rc = mp_chseg_next(L->seg, &m);
		if (rc == 0) {
			/* A full scan found no request: any request taken
			 * later was posted after now (a request is only
			 * taken or withdrawn, never hidden from a scan). */
			L->scan_ns = coarse_ns();
			return MP_LOCAL_NOTHING;
		}
		if (rc < 0) {
			mp_log(MESSIP_LOG_WARNING, "MESSIP-SHM-CORRUPT",
			       "channel %s: slot %u held garbage; reset, its "
			       "client gets EBADMSG",
			       c->pub->name, m.slot);
			if (m.slot < MP_CHSEG_MAX_SLOTS &&
			    L->held[m.slot].index >= 0)
				orphan(c, &L->held[m.slot]);
			continue;
		}
		if (m.slot >= MP_CHSEG_MAX_SLOTS)
			continue;
		switch (m.kind) {
		case MP_CHSEG_REQUEST:
			if (m.reqid & PING_BIT) {
				/* Answered here: programs never see pings. */
				mp_chseg_reply(L->seg, m.ticket, 0, NULL, 0);
				continue;
			}
			h = &L->held[m.slot];
			if (h->index >= 0)
				orphan(c, h);
			h->ticket = m.ticket;
			h->heap = false;
			h->gone = false;
			/* Its age counts from the last empty scan, not from
			 * now: a request posted long before receive was
			 * called may come from a client dead since. */
			h->since_ns = L->scan_ns;
			h->type = m.type;
			h->len = m.len;
			h->data = m.data;
			h->pid = m.pid;
			h->uid = m.uid;
			h->gid = m.gid;
			h->cred = m.cred;
			memset(h->id, 0, sizeof(h->id));
			memcpy(h->id, m.id,
			       strnlen(m.id, sizeof(m.id)) < MESSIP_MAXLEN_ID
				       ? strnlen(m.id, sizeof(m.id))
				       : MESSIP_MAXLEN_ID);
			return deliver(c, L, (int)m.slot, type, sink, result);
		case MP_CHSEG_CANCELED:
			/* Withdrawn after we took it: the reply will be
			 * dropped by mp_chseg_reply (-ECANCELED).  The index
			 * awaits that reply all the same; a channel that
			 * asked is told which one. */
			h = held_of(L, &m);
			if (h && c->srv.opt_canceled) {
				*type = h->index;
				set_result(c, h->id, sizeof(h->id), 0, 0);
				*result = MESSIP_MSG_CANCELED;
				return 0;
			}
			break;
		case MP_CHSEG_GONE:
			h = held_of(L, &m);
			if (h)
				h->gone = true;
			break;
		default:
			break;
		}
	}
	return MP_LOCAL_NOTHING;
}

static int take_ring(struct messip_channel_priv *c, struct mp_local *L,
		     int32_t *type, const struct mp_iov_sink *sink, int *result)
{
	bool plain = !sink->iov && !(sink->maxlen == 0 && sink->buf);
	int32_t stored;
	uint8_t *buf;
	int rc;

	if (!L->bpend) {
		/* After an empty pop, a look at head and tail first: cheaper
		 * than a pop that finds nothing (its poll reads the clock).
		 * While records come, pop straight away: the ring then works
		 * from the head it saw last, without reading the producers'
		 * line for every record. */
		if (!L->ring_more && !mp_chseg_bpending(L->seg))
			return MP_LOCAL_NOTHING;
		buf = plain ? sink->buf : scratch(L);
		if (!buf && !(plain && sink->maxlen == 0))
			return -ENOMEM;
		rc = mp_chseg_bpop(L->seg, &L->bmeta, buf,
				   plain ? (uint32_t)sink->maxlen
					 : MESSIP_MAX_MSGLEN);
		L->ring_more = rc > 0;
		if (rc == 0)
			return MP_LOCAL_NOTHING;
		if (rc < 0) {
			mp_log(MESSIP_LOG_WARNING, "MESSIP-SHM-CORRUPT",
			       "channel %s: buffered ring corrupt; reset, "
			       "its messages lost",
			       c->pub->name);
			return MP_LOCAL_NOTHING;
		}
		if (plain) {
			stored = L->bmeta.len < (uint32_t)sink->maxlen
					 ? (int32_t)L->bmeta.len
					 : sink->maxlen;
			goto done;
		}
		L->bpend = true;
	}
	/* Dynamic mode or a vector: from the scratch copy.  Kept (bpend)
	 * if that fails, so nothing taken from the ring is lost. */
	rc = mp_iov_put(sink, L->scratch, L->bmeta.len, &stored);
	if (rc < 0)
		return rc;
	L->bpend = false;
done:
	*type = L->bmeta.type;
	set_result(c, L->bmeta.id, sizeof(L->bmeta.id), (int32_t)L->bmeta.len,
		   stored);
	*result = MESSIP_MSG_NOREPLY;
	return 0;
}

static int take_once(struct messip_channel_priv *c, struct mp_local *L,
		     int32_t *type, const struct mp_iov_sink *sink, int *result)
{
	int rc;

	/* Chores need the clock: under a stream of messages look at it
	 * every 16th take only, when idle every time. */
	if ((++L->takes & 15) == 0 || L->idle)
		maybe_reap(L, coarse_ns());
	/* Slots and ring take turns, so neither starves the other; after a
	 * pause the ring first: a client's buffered messages are older than
	 * a request it sent after them.  While the ring streams, the slots
	 * get every 16th turn only (a scan of them per message would cost
	 * a sizeable share of it). */
	if (L->ring_turn || L->bpend || L->idle ||
	    (L->ring_more && (L->takes & 15))) {
		rc = take_ring(c, L, type, sink, result);
		if (rc == MP_LOCAL_NOTHING)
			rc = take_slot(c, L, type, sink, result);
	} else {
		rc = take_slot(c, L, type, sink, result);
		if (rc == MP_LOCAL_NOTHING)
			rc = take_ring(c, L, type, sink, result);
	}
	if (rc == 0)
		L->ring_turn = *result >= 0;
	L->idle = rc == MP_LOCAL_NOTHING;
	return rc;
}

/* fd mode: clear localfd (it may stand for work already taken). */
static bool drain_localfd(struct mp_local *L)
{
	uint64_t v;

	if (!__atomic_load_n(&L->posted, __ATOMIC_RELAXED))
		return false;
	/* Seq_cst store, then the caller's rescan: pairs with post(). */
	__atomic_store_n(&L->posted, 0, __ATOMIC_SEQ_CST);
	(void)!read(L->localfd, &v, sizeof(v));
	return true;
}

int mp_local_take(struct messip_channel_priv *c, int32_t *type,
		  const struct mp_iov_sink *sink, int *result)
{
	struct mp_local *L = c->local;
	int rc;

	if (!L || !L->seg)
		return MP_LOCAL_NOTHING;
	/* The watcher found the epoll ready: let the loop look there first,
	 * or a stream of local requests would starve TCP clients. */
	if (__atomic_load_n(&L->arm, __ATOMIC_RELAXED) == ARM_FIRED &&
	    !__atomic_load_n(&L->fdmode, __ATOMIC_RELAXED) &&
	    __atomic_load_n(&L->npeers, __ATOMIC_RELAXED) > 0)
		return MP_LOCAL_NOTHING;
	rc = take_once(c, L, type, sink, result);
	if (rc == MP_LOCAL_NOTHING &&
	    __atomic_load_n(&L->fdmode, __ATOMIC_RELAXED) && drain_localfd(L))
		rc = take_once(c, L, type, sink, result);
	return rc;
}

bool mp_local_turn(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;

	if (!L)
		return false;
	L->queue_turn = !L->queue_turn;
	return !L->queue_turn;
}

/* ------------------------------------------------------------------ */
/* Server: waiting.                                                    */

static int fired(struct messip_channel_priv *c, struct mp_local *L,
		 struct epoll_event *evs, int max)
{
	int n = epoll_wait(c->srv.epfd, evs, max, 0);

	/* Release: our reads of the epoll happen before the watcher, once
	 * re-armed (at our next sleep), waits on it again. */
	__atomic_store_n(&L->arm, ARM_IDLE, __ATOMIC_RELEASE);
	return n;
}

bool mp_local_owns_wait(struct messip_channel_priv *c, int64_t *until)
{
	struct mp_local *L = c->local;
	uint32_t a = ARM_FIRED;
	int64_t now;

	if (!L || !L->seg)
		return false;
	if (__atomic_load_n(&L->fdmode, __ATOMIC_RELAXED))
		return false; /* the helper rings localfd in the epoll */
	if (__atomic_load_n(&L->npeers, __ATOMIC_RELAXED) > 0)
		return true;
	/* No local peer: the epoll alone, as on TCP.  The program's thread
	 * looks at the epoll itself now, so a pending "fired" is moot. */
	__atomic_compare_exchange_n(&L->arm, &a, ARM_IDLE, 0, __ATOMIC_RELAXED,
				    __ATOMIC_RELAXED);
	/* Without a watcher nobody reaps: wake up for it while dead clients
	 * may have left slots behind. */
	now = coarse_ns();
	if (reap_wanted(L, now) && *until > now + REAP_TICK_NS)
		*until = mp_time_now_ns() + REAP_TICK_NS;
	return false;
}

int mp_local_wait(struct messip_channel_priv *c, struct epoll_event *evs,
		  int max, int64_t until)
{
	struct mp_local *L = c->local;
	uint32_t a = __atomic_load_n(&L->arm, __ATOMIC_ACQUIRE);

	if (a == ARM_FIRED)
		return fired(c, L, evs, max);
	if (a == ARM_IDLE) {
		/* Release: the watcher's epoll_wait comes after our last
		 * look at the epoll. */
		__atomic_store_n(&L->arm, ARM_ARMED, __ATOMIC_RELEASE);
		mp_futex_wake(&L->arm, 1);
	}
	mp_chseg_server_wait(L->seg, until);
	if (__atomic_load_n(&L->arm, __ATOMIC_ACQUIRE) == ARM_FIRED)
		return fired(c, L, evs, max);
	return 0;
}

bool mp_local_peer_hello(struct messip_channel_priv *c,
			 const struct mp_wire_msg *m)
{
	struct mp_local *L = c->local;

	if (!L || !L->seg || !m->u || m->u != c->cnx->my_host)
		return false;
	__atomic_add_fetch(&L->npeers, 1, __ATOMIC_RELAXED);
	return true;
}

void mp_local_peer_gone(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;

	if (!L || !L->seg)
		return;
	__atomic_sub_fetch(&L->npeers, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&L->reap_until, coarse_ns() + REAP_AFTER_NS,
			 __ATOMIC_RELAXED);
	/* The link closing is often the first sign of a client's death:
	 * look at every slot now (the process may not quite be gone yet;
	 * the periodic reaping catches that case). */
	mp_chseg_reap(L->seg, 1);
}

void mp_local_event_ahead(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;

	/* A DISMISSED about to be handed out means a client died: make sure
	 * the segment knows before the program can reply to it (a reply to
	 * a dead client must fail with ESRCH, whatever the timing). */
	if (L && L->seg)
		mp_chseg_reap(L->seg, 1);
}

bool mp_local_viewing(const struct messip_channel_priv *c)
{
	return c->local && c->local->view_mode;
}

void mp_local_fd_mode(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;
	struct mp_chseg_hdr *h;

	if (!L || !L->seg || __atomic_load_n(&L->fdmode, __ATOMIC_RELAXED))
		return;
	h = L->seg->hdr;
	/* Count the helper as a sleeping server from now on (seq_cst:
	 * Dekker with the clients' publication, as in server_wait), fence
	 * the clients whose ring publications are plain stores, then look
	 * once: what was published before is seen now, what comes after
	 * rings the bell.  (The fence cannot fail where create found it
	 * working; where it did not, clients publish with locked stores.) */
	__atomic_add_fetch(&h->srv_waiters, 1, __ATOMIC_SEQ_CST);
	(void)mp_chseg_sleeper_fence(L->seg);
	__atomic_store_n(&L->bell0, __atomic_load_n(&h->bell, __ATOMIC_SEQ_CST),
			 __ATOMIC_RELEASE);
	__atomic_store_n(&L->fdmode, 1, __ATOMIC_RELEASE);
	/* Release: bell0 is visible to the helper once it sees ARM_FD.  The
	 * store changes its futex word, so it cannot sleep through it. */
	__atomic_store_n(&L->arm, ARM_FD, __ATOMIC_RELEASE);
	helper_ctl(L);
	if (mp_chseg_server_wait(L->seg, mp_time_now_ns()) == 1)
		post(L);
}

/* ------------------------------------------------------------------ */
/* Server: replying.                                                   */

static int iov_overlaps(const struct iovec *iov, int iovcnt, const void *b,
			size_t blen)
{
	uintptr_t lo = (uintptr_t)b, hi = lo + blen;

	for (int i = 0; i < iovcnt; i++) {
		uintptr_t x = (uintptr_t)iov[i].iov_base;

		if (iov[i].iov_len && x < hi && lo < x + iov[i].iov_len)
			return 1;
	}
	return 0;
}

static void gather(void *dst, const struct iovec *iov, int iovcnt)
{
	uint8_t *p = dst;

	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
}

static void rloan_free(struct mp_local *L, int index)
{
	for (int i = 0; i < L->nrloans; i++) {
		if (L->rloans[i].index == index) {
			free(L->rloans[i].buf);
			L->rloans[i] = L->rloans[--L->nrloans];
			return;
		}
	}
}

int mp_local_reply(struct messip_channel_priv *c, int index, int32_t answer,
		   const struct iovec *iov, int iovcnt, uint32_t total)
{
	struct mp_local *L = c->local;
	struct mp_local_held *h = c->srv.slots[index].local;
	const void *data = NULL;
	void *tmp = NULL;
	int64_t now;
	int rc;

	if (!L || !L->seg)
		return -EINVAL;
	if (h->heap) {
		rc = -ESRCH; /* its slot was reset: the client got EBADMSG */
		goto done;
	}
	if (!h->gone) {
		/* A request posted a while ago (held, or waiting in its slot
		 * before receive took it): its client may have died in the
		 * meantime, which the reply CAS alone would not notice.
		 * Within a millisecond the check is skipped (the fast path),
		 * as on TCP: a death then is as good as one just after.
		 * Checks are at most one a millisecond; each looks at every
		 * slot in use. */
		now = coarse_ns();
		if (now - h->since_ns > HUP_CHECK_NS &&
		    now - L->last_check > HUP_CHECK_NS) {
			L->last_check = now;
			mp_chseg_reap(L->seg, 1);
		}
	}
	if (total && iovcnt == 1) {
		data = iov[0].iov_base;
	} else if (total) {
		uint32_t cap = 0;
		void *b = mp_chseg_reply_buf(L->seg, h->ticket, &cap);

		if (b && !iov_overlaps(iov, iovcnt, b, cap)) {
			gather(b, iov, iovcnt);
			data = b;
		} else {
			tmp = mp_alloc(total);
			if (!tmp)
				return -ENOMEM;
			gather(tmp, iov, iovcnt);
			data = tmp;
		}
	}
	rc = mp_chseg_reply(L->seg, h->ticket, answer, data, total);
	free(tmp);
	if (rc == -EMSGSIZE)
		return rc; /* still held */
done:
	c->srv.slots[index].local = NULL;
	c->pub->receive_allmsg[index] = NULL;
	rloan_free(L, index);
	if (h->heap)
		free(h);
	else
		h->index = -1;
	switch (rc) {
	case 0:
	case -ECANCELED: /* the client gave up: nobody to tell */
		return 0;
	default: /* -ESRCH, and a slot scribbled or reset: it did not
		    reach its client */
		return -ESRCH;
	}
}

/* ------------------------------------------------------------------ */
/* Client.                                                             */

pid_t mp_local_split_addr(char *addr)
{
	char *slash = strchr(addr, '/');
	char *end;
	long v;

	if (!slash)
		return 0;
	*slash = '\0';
	v = strtol(slash + 1, &end, 10);
	return *end || v <= 0 || v > INT_MAX ? 0 : (pid_t)v;
}

int mp_local_cli_prepare(struct messip_channel_priv *c, pid_t srv_pid,
			 uint64_t srv_host)
{
	struct mp_local *L;

	mp_local_close(c); /* a reconnect: the old segment is done with */
	if (!srv_pid || !srv_host || no_shm())
		return 0;
	L = local_get(c);
	if (!L)
		return -ENOMEM;
	L->cand = true;
	L->srv_pid = srv_pid;
	L->srv_host = srv_host;
	return 0;
}

/* Map the candidate's segment: true when it is ours to use. */
static bool cli_map(struct messip_channel_priv *c, struct mp_local *L)
{
	struct messip_cnx *cnx = c->cnx;
	char name[MP_SHM_NAME_MAX];
	unsigned port = addr_port(c->addr);
	int rc;

	if (!port)
		return false;
	if (!cnx->my_host && mp_host_token(&cnx->my_host) < 0)
		cnx->my_host = 0;
	if (L->srv_host != cnx->my_host)
		return false;
	if (seg_name(name, sizeof(name), L->srv_host, L->srv_pid, port,
		     c->pub->name) < 0)
		return false;
	L->seg = mp_calloc(1, sizeof(*L->seg));
	if (!L->seg)
		return false;
	rc = mp_chseg_open(L->seg, name);
	if (rc == 0 && L->seg->srv_pid != L->srv_pid) {
		mp_chseg_close(L->seg);
		rc = -ESRCH;
	}
	if (rc < 0) {
		/* Not for us (permissions, another PID namespace, already
		 * gone, ...): the TCP path serves.  A failed open leaves
		 * nothing to close. */
		mp_log(MESSIP_LOG_DEBUG, "MESSIP-SHM-FALLBACK",
		       "channel %s: segment %s: %s, using TCP", c->pub->name,
		       name, strerror(-rc));
		free(L->seg);
		L->seg = NULL;
		return false;
	}
	snprintf(L->name, sizeof(L->name), "%s", name);
	L->last_pump = L->last_alive = coarse_ns();
	return true;
}

int mp_local_cli_ready(struct messip_channel_priv *c, int msec_timeout)
{
	struct mp_local *L = c->local;
	int rc;

	if (!L || !L->cand)
		return 0;
	if (!L->tried) {
		L->tried = true;
		L->on_seg = cli_map(c, L);
	}
	if (L->on_seg) {
		/* The link's HELLO tells the server a same-host client has
		 * come (it then sleeps on the doorbell).  Before any slot
		 * is used: a server asleep in its epoll sees the HELLO
		 * first, then looks at the slots. */
		rc = mp_cli_link(c, mp_time_deadline(msec_timeout));
		if (rc == -ETIMEDOUT)
			return rc; /* the connect goes on: next call */
		if (rc < 0) {
			/* Unreachable: the TCP path reports it. */
			mp_chseg_close(L->seg);
			free(L->seg);
			L->seg = NULL;
			L->on_seg = false;
		}
	}
	L->cand = false;
	return 0;
}

bool mp_local_cli_active(const struct messip_channel_priv *c)
{
	return c->local && c->local->on_seg;
}

uint64_t mp_local_hello_token(const struct messip_channel_priv *c)
{
	return mp_local_cli_active(c) ? c->cnx->my_host : 0;
}

/* The server went away: every later call fails at once; if it died
 * without closing its segment, the name is removed here. */
static int server_gone(struct mp_local *L)
{
	if (!L->gone) {
		L->gone = true;
		if (__atomic_load_n(&L->seg->hdr->alive, __ATOMIC_RELAXED) &&
		    !mp_chseg_server_alive(L->seg))
			mp_shm_unlink(L->name);
	}
	return -ESRCH;
}

static int cli_err(struct mp_local *L, int rc)
{
	return rc == -ESRCH ? server_gone(L) : rc;
}

bool mp_local_cli_gone(struct messip_channel_priv *c)
{
	struct mp_local *L = c->local;

	if (!L || !L->on_seg)
		return false;
	if (!L->gone && !mp_chseg_server_alive(L->seg))
		server_gone(L);
	return L->gone;
}

/* Chores of a client call: service the manager link now and then (a
 * process that only sends keeps its registration alive, as on TCP), and
 * keep the identity written into requests current. */
static void cli_tick(struct messip_channel_priv *c, struct mp_local *L,
		     int64_t now)
{
	struct messip_cnx *cnx = c->cnx;

	if (now - L->last_pump >= PUMP_NS) {
		L->last_pump = now;
		mp_cnx_pump(cnx);
	}
	if (!L->ident_set || L->ident_regno != cnx->regno) {
		mp_chseg_set_identity(L->seg, (uint32_t)cnx->regno, cnx->id);
		L->ident_regno = cnx->regno;
		L->ident_set = true;
	}
}

/* End of this slice of a wait: pump between slices. */
static int64_t slice(int64_t deadline)
{
	int64_t end = coarse_ns() + PUMP_NS;

	return deadline < end ? deadline : end;
}

static void end_view(struct mp_local *L)
{
	if (L->has_view && L->view_seg && L->seg)
		mp_chseg_done(L->seg, &L->view);
	L->has_view = false;
	L->view_ptr = NULL;
}

static uint64_t next_reqid(struct mp_local *L)
{
	L->reqid = (L->reqid + 1) & ~PING_BIT;
	return L->reqid;
}

/* Wait for r's reply in slices, servicing the manager link between
 * them: as mp_chseg_wait; *dead when -ETIMEDOUT came from a dead
 * server (r still pending). */
static int wait_slices(struct messip_channel_priv *c, struct mp_local *L,
		       struct mp_chseg_req *r, int64_t deadline, bool *dead)
{
	int rc;

	*dead = false;
	for (;;) {
		/* Until the next pump is due (cli_tick just saw to it, so
		 * this needs no clock read). */
		int64_t end = L->last_pump + PUMP_NS;

		if (end > deadline)
			end = deadline;
		rc = mp_chseg_wait(L->seg, r, end);
		if (rc != -ETIMEDOUT || end == deadline)
			return rc;
		/* Our slices are shorter than mp_chseg's own liveness
		 * slices, which therefore never end: check here. */
		if (!mp_chseg_server_alive(L->seg)) {
			*dead = true;
			return rc;
		}
		mp_cnx_pump(c->cnx);
		L->last_pump = coarse_ns();
	}
}

/* Wait for r's reply in slices; withdraw it at the deadline. */
static int await_reply(struct messip_channel_priv *c, struct mp_local *L,
		       struct mp_chseg_req *r, int64_t deadline)
{
	bool dead;
	int rc = wait_slices(c, L, r, deadline, &dead);

	if (rc == -ETIMEDOUT) {
		/* Still pending (mp_chseg_wait released r on any other
		 * error): withdraw it. */
		int cr = mp_chseg_cancel(L->seg, r);

		if (cr == 1)
			rc = 0; /* the reply won the race: deliver it */
		else if (cr < 0)
			rc = cr;
		else if (dead)
			rc = -ESRCH;
	}
	return cli_err(L, rc);
}

/*
 * Publish the loaned r (len bytes in r->buf) and wait for the reply.  The
 * reply goes to sink, or stays in the slot as a view (*view, *vlen) until
 * end_view.  r is released in every case but the view.
 */
static int roundtrip(struct messip_channel_priv *c, struct mp_local *L,
		     struct mp_chseg_req *r, int32_t type, uint32_t len,
		     int32_t *answer, const struct mp_iov_sink *sink,
		     const void **view, int *vlen, int64_t deadline)
{
	int32_t stored = 0;
	int rc;

	rc = mp_chseg_send(L->seg, r, type, next_reqid(L), len);
	if (rc < 0) {
		if (rc == -EMSGSIZE)
			mp_chseg_done(L->seg, r);
		return cli_err(L, rc);
	}
	rc = await_reply(c, L, r, deadline);
	if (rc < 0)
		return rc;
	if (view) {
		L->view = *r;
		L->has_view = true;
		L->view_seg = true;
		L->view_ptr = r->rdata;
		*view = r->rdata;
		*vlen = (int)r->rlen;
		stored = (int32_t)r->rlen;
	} else {
		rc = mp_iov_put(sink, r->rdata, r->rlen, &stored);
		mp_chseg_done(L->seg, r);
		if (rc < 0)
			return rc;
	}
	if (answer)
		*answer = r->answer;
	c->pub->datalen = (int32_t)r->rlen;
	c->pub->datalenr = stored;
	return 0;
}

/* Claim a slot and copy the request (total bytes of iov) into it. */
static int load_req(struct messip_channel_priv *c, struct mp_local *L,
		    struct mp_chseg_req *r, const struct iovec *iov, int iovcnt,
		    uint32_t total, int64_t deadline)
{
	int rc;

	end_view(L);
	if (L->gone)
		return -ESRCH;
	if (total > L->seg->max_msg)
		return -EMSGSIZE;
	cli_tick(c, L, coarse_ns());
	rc = mp_chseg_loan(L->seg, r, deadline);
	if (rc < 0)
		return cli_err(L, rc);
	if (iovcnt == 1)
		memcpy(r->buf, iov[0].iov_base, total);
	else
		gather(r->buf, iov, iovcnt);
	return 0;
}

int mp_local_send(struct messip_channel_priv *c, int32_t type,
		  const struct iovec *iov, int iovcnt, uint32_t total,
		  int32_t *answer, const struct mp_iov_sink *sink,
		  int64_t deadline)
{
	struct mp_local *L = c->local;
	struct mp_chseg_req r;
	int rc = load_req(c, L, &r, iov, iovcnt, total, deadline);

	if (rc < 0)
		return rc;
	return roundtrip(c, L, &r, type, total, answer, sink, NULL, NULL,
			 deadline);
}

int mp_local_post(struct messip_channel_priv *c, int32_t type,
		  const struct iovec *iov, int iovcnt, uint32_t total,
		  struct mp_chseg_req *r, int64_t deadline)
{
	struct mp_local *L = c->local;
	int rc = load_req(c, L, r, iov, iovcnt, total, deadline);

	if (rc < 0)
		return rc;
	rc = mp_chseg_send(L->seg, r, type, next_reqid(L), total);
	return rc < 0 ? cli_err(L, rc) : 0;
}

int mp_local_req_wait(struct messip_channel_priv *c, struct mp_chseg_req *r,
		      int64_t deadline)
{
	struct mp_local *L = c->local;
	bool dead;
	int rc;

	if (!L || !L->seg)
		return -ESRCH; /* not reached: slots are given back first */
	if (L->gone) {
		/* Known dead (another request found out): a reply that
		 * made it still counts; otherwise at once, no slices. */
		return mp_chseg_cancel(L->seg, r) == 1 ? 0 : -ESRCH;
	}
	if (deadline == 0) {
		/* A look: no slices, no manager. */
		rc = mp_chseg_wait(L->seg, r, 0);
	} else {
		cli_tick(c, L, coarse_ns());
		rc = wait_slices(c, L, r, deadline, &dead);
		if (rc == -ETIMEDOUT && dead) {
			/* Gone: free the slot (a withdrawal the server
			 * will never see), then report it. */
			if (mp_chseg_cancel(L->seg, r) == 1)
				return 0;
			rc = -ESRCH;
		}
	}
	return cli_err(L, rc);
}

int mp_local_req_cancel(struct messip_channel_priv *c, struct mp_chseg_req *r)
{
	struct mp_local *L = c->local;
	int rc;

	if (!L || !L->seg)
		return 0; /* not reached: nothing left to withdraw */
	rc = mp_chseg_cancel(L->seg, r);
	return rc < 0 ? cli_err(L, rc) : rc;
}

void mp_local_req_done(struct messip_channel_priv *c, struct mp_chseg_req *r)
{
	if (c->local && c->local->seg)
		mp_chseg_done(c->local->seg, r);
}

int mp_local_ping(struct messip_channel_priv *c, int64_t deadline)
{
	struct mp_local *L = c->local;
	struct mp_chseg_req r;
	int rc;

	end_view(L);
	if (L->gone)
		return -ESRCH;
	cli_tick(c, L, coarse_ns());
	rc = mp_chseg_loan(L->seg, &r, deadline);
	if (rc < 0)
		return cli_err(L, rc);
	rc = mp_chseg_send(L->seg, &r, 0, PING_BIT | next_reqid(L), 0);
	if (rc < 0)
		return cli_err(L, rc);
	rc = await_reply(c, L, &r, deadline);
	if (rc == 0)
		mp_chseg_done(L->seg, &r);
	return rc;
}

int mp_local_bsend(struct messip_channel_priv *c, int32_t type,
		   const void *data, uint32_t len, int msec_timeout)
{
	struct mp_local *L = c->local;
	int64_t now = coarse_ns(), deadline;
	int rc;

	if (L->gone)
		return -ESRCH;
	if (len > L->seg->max_msg)
		return -EMSGSIZE;
	cli_tick(c, L, now);
	/* A dead server's ring would swallow messages silently: look at it
	 * now and then (the alive lock: no system call while it lives). */
	if (now - L->last_alive >= ALIVE_NS) {
		L->last_alive = now;
		if (!mp_chseg_server_alive(L->seg))
			return server_gone(L);
	}
	/* First without a deadline (a deadline of 0: one look, no clock
	 * read), which is all it takes while the ring has room. */
	rc = mp_chseg_bsend(L->seg, type, data, len, 0);
	if (rc != -ETIMEDOUT || msec_timeout == 0)
		return rc < 0 ? cli_err(L, rc) : rc;
	deadline = mp_time_deadline(msec_timeout);
	for (;;) {
		int64_t end = slice(deadline);

		rc = mp_chseg_bsend(L->seg, type, data, len, end);
		if (rc != -ETIMEDOUT || end == deadline)
			break;
		if (!mp_chseg_server_alive(L->seg)) {
			rc = -ESRCH; /* as in await_reply */
			break;
		}
		mp_cnx_pump(c->cnx);
		L->last_pump = coarse_ns();
	}
	return rc < 0 ? cli_err(L, rc) : rc;
}

/* ------------------------------------------------------------------ */
/* Public: which path, credentials.                                    */

MESSIP_EXPORT int messip_channel_path(messip_channel_t *ch)
{
	struct messip_channel_priv *c = mp_chan_get(ch);

	if (!c)
		return mp_fail(-EINVAL);
	if (mp_inproc_cli_active(c))
		return MESSIP_PATH_INPROC;
	if (c->server)
		return c->local && c->local->seg ? MESSIP_PATH_SHM
						 : MESSIP_PATH_TCP;
	/* Not decided yet: decide now (a connect in progress counts as
	 * TCP until it is done). */
	if (mp_local_cli_ready(c, 1000) < 0)
		return MESSIP_PATH_TCP;
	return mp_local_cli_active(c) ? MESSIP_PATH_SHM : MESSIP_PATH_TCP;
}

static struct mp_local_held *held_index(struct messip_channel_priv *c,
					int index)
{
	if (index < 0 || index >= c->srv.nslots)
		return NULL;
	return c->srv.slots[index].local;
}

static bool index_waits(struct messip_channel_priv *c, int index)
{
	return index >= 0 && index < c->srv.nslots &&
	       (c->srv.slots[index].item || c->srv.slots[index].local ||
		c->srv.slots[index].inproc);
}

MESSIP_EXPORT int messip_sender_cred(messip_channel_t *ch, int index,
				     pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_local_held *h;

	if (!c || !c->server || !index_waits(c, index))
		return mp_fail(-EINVAL);
	if (c->srv.slots[index].inproc) {
		/* A thread of this process: known for certain. */
		if (pid)
			*pid = getpid();
		if (uid)
			*uid = getuid();
		if (gid)
			*gid = getgid();
		return 0;
	}
	h = held_index(c, index);
	if (!h || h->cred != MP_CHSEG_CRED_CHECKED)
		return mp_fail(-ENODATA);
	if (pid)
		*pid = h->pid;
	if (uid)
		*uid = h->uid;
	if (gid)
		*gid = h->gid;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Public: zero-copy, client.                                          */

static struct mp_loan *loan_find(struct mp_local *L, const void *buf)
{
	if (!L || !buf)
		return NULL;
	for (int i = 0; i < MP_LOCAL_LOANS; i++)
		if (L->loans[i].buf == buf)
			return &L->loans[i];
	return NULL;
}

static int loan_put(struct mp_local *L, struct mp_loan *ln)
{
	if (ln->seg)
		mp_chseg_done(L->seg, &ln->r);
	else
		free(ln->buf);
	ln->buf = NULL;
	return 0;
}

MESSIP_EXPORT void *messip_buffer_loan(messip_channel_t *ch, size_t len,
				       int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_loan *ln = NULL;
	struct mp_local *L;
	int rc;

	if (!c || c->server)
		return mp_fail_ptr(-EINVAL);
	if (len > MESSIP_MAX_MSGLEN)
		return mp_fail_ptr(-EMSGSIZE);
	if (mp_inproc_cli_active(c))
		return mp_inproc_loan(c, len);
	rc = mp_local_cli_ready(c, msec_timeout);
	if (rc < 0)
		return mp_fail_ptr(rc);
	L = local_get(c);
	if (!L)
		return mp_fail_ptr(-ENOMEM);
	end_view(L);
	for (int i = 0; i < MP_LOCAL_LOANS && !ln; i++)
		if (!L->loans[i].buf)
			ln = &L->loans[i];
	if (!ln)
		return mp_fail_ptr(-EAGAIN);
	if (L->on_seg) {
		if (L->gone)
			return mp_fail_ptr(-ESRCH);
		cli_tick(c, L, coarse_ns());
		/* A free slot needs no deadline (0: one look, no clock). */
		rc = mp_chseg_loan(L->seg, &ln->r, 0);
		if (rc == -ETIMEDOUT && msec_timeout != 0)
			rc = mp_chseg_loan(L->seg, &ln->r,
					   mp_time_deadline(msec_timeout));
		if (rc < 0)
			return mp_fail_ptr(cli_err(L, rc));
		ln->seg = true;
		ln->buf = ln->r.buf;
	} else {
		ln->seg = false;
		ln->buf = mp_alloc(len ? len : 1);
		if (!ln->buf)
			return mp_fail_ptr(-ENOMEM);
	}
	ln->len = len;
	return ln->buf;
}

MESSIP_EXPORT int messip_buffer_release(messip_channel_t *ch, const void *buf)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_local *L;
	struct mp_loan *ln;

	if (c && !c->server && mp_inproc_cli_active(c))
		return mp_inproc_release(c, buf) < 0 ? mp_fail(-EINVAL) : 0;
	if (!c || c->server || !c->local || !buf)
		return mp_fail(-EINVAL);
	L = c->local;
	ln = loan_find(L, buf);
	if (ln)
		return loan_put(L, ln);
	if (L->has_view && L->view_ptr == buf) {
		end_view(L);
		return 0;
	}
	return mp_fail(-EINVAL);
}

/* Send loan ln (len bytes) and wait: reply to sink or to a view. */
static int send_loan(struct messip_channel_priv *c, struct mp_local *L,
		     struct mp_loan *ln, int32_t type, int len, int32_t *answer,
		     const struct mp_iov_sink *sink, const void **view,
		     int *vlen, int msec_timeout)
{
	int64_t deadline = mp_time_deadline(msec_timeout);
	int rc;

	end_view(L); /* "until the next call that sends" */
	if (ln->seg) {
		if (L->gone) {
			loan_put(L, ln);
			return -ESRCH;
		}
		cli_tick(c, L, coarse_ns());
		rc = roundtrip(c, L, &ln->r, type, (uint32_t)len, answer, sink,
			       view, vlen, deadline);
		ln->buf = NULL; /* roundtrip released or kept it as view */
		return rc;
	}
	/* TCP: the classic call, copying. */
	if (view) {
		if (!L->view_buf)
			L->view_buf = mp_alloc(MESSIP_MAX_MSGLEN);
		if (!L->view_buf) {
			loan_put(L, ln);
			return -ENOMEM;
		}
		rc = messip_send(c->pub, type, ln->buf, len, answer,
				 L->view_buf, MESSIP_MAX_MSGLEN, msec_timeout);
		if (rc == 0) {
			*view = L->view_buf;
			*vlen = c->pub->datalenr;
			L->has_view = true;
			L->view_seg = false;
			L->view_ptr = L->view_buf;
		}
	} else {
		rc = messip_send(c->pub, type, ln->buf, len, answer, sink->buf,
				 sink->maxlen, msec_timeout);
	}
	rc = rc == MESSIP_MSG_TIMEOUT ? -ETIMEDOUT : rc < 0 ? -errno : 0;
	loan_put(L, ln);
	return rc;
}

static int loaned_args(messip_channel_t *ch, void *buf, int len,
		       struct messip_channel_priv **cp, struct mp_loan **lnp)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_loan *ln;

	if (!c || c->server || len < 0)
		return -EINVAL;
	ln = loan_find(c->local, buf);
	if (!ln)
		return -EINVAL;
	if ((size_t)len > ln->len)
		return -EMSGSIZE;
	*cp = c;
	*lnp = ln;
	return 0;
}

static int zc_result(int rc)
{
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	return rc < 0 ? mp_fail(rc) : 0;
}

MESSIP_EXPORT int messip_send_loaned(messip_channel_t *ch, int32_t type,
				     void *buf, int len, int32_t *answer,
				     void *reply_buffer, int reply_maxlen,
				     int msec_timeout)
{
	struct mp_iov_sink sink = mp_iov_sink_buf(reply_buffer, reply_maxlen);
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_loan *ln;
	int rc;

	if (c && !c->server && mp_inproc_cli_active(c)) {
		rc = mp_iov_sink_check(&sink);
		return rc < 0 ? mp_fail(rc)
			      : zc_result(mp_inproc_send_loaned(
					c, type, buf, len, answer, &sink, NULL,
					NULL, mp_time_deadline(msec_timeout)));
	}
	rc = loaned_args(ch, buf, len, &c, &ln);
	if (rc == 0)
		rc = mp_iov_sink_check(&sink);
	if (rc < 0)
		return mp_fail(rc);
	return zc_result(send_loan(c, c->local, ln, type, len, answer, &sink,
				   NULL, NULL, msec_timeout));
}

MESSIP_EXPORT int messip_send_view(messip_channel_t *ch, int32_t type,
				   void *buf, int len, int32_t *answer,
				   const void **reply, int *reply_len,
				   int msec_timeout)
{
	struct messip_channel_priv *c;
	struct mp_loan *ln;
	int vlen = 0, rc;

	if (!reply || !reply_len)
		return mp_fail(-EINVAL);
	c = mp_chan_get(ch);
	if (c && !c->server && mp_inproc_cli_active(c)) {
		*reply = NULL;
		*reply_len = 0;
		return zc_result(mp_inproc_send_loaned(
			c, type, buf, len, answer, NULL, reply, reply_len,
			mp_time_deadline(msec_timeout)));
	}
	rc = loaned_args(ch, buf, len, &c, &ln);
	if (rc < 0)
		return mp_fail(rc);
	*reply = NULL;
	*reply_len = 0;
	rc = send_loan(c, c->local, ln, type, len, answer, NULL, reply, &vlen,
		       msec_timeout);
	if (rc == 0)
		*reply_len = vlen;
	return zc_result(rc);
}

/* ------------------------------------------------------------------ */
/* Public: zero-copy, server.                                          */

MESSIP_EXPORT int messip_receive_view(messip_channel_t *ch, int32_t *type,
				      const void **data, int *len,
				      int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_iov_sink sink;
	struct mp_local *L;
	int32_t dummy;
	int result = 0, rc;

	if (!c || !c->server || !data || !len)
		return mp_fail(-EINVAL);
	*data = NULL;
	*len = 0;
	L = local_get(c);
	if (!L || !scratch(L))
		return mp_fail(-ENOMEM);
	/* TCP requests and every buffered message are copied into the
	 * scratch buffer (valid until the next receive); same-host
	 * requests are not copied at all. */
	sink = mp_iov_sink_buf(L->scratch, MESSIP_MAX_MSGLEN);
	L->view_mode = true;
	rc = mp_srv_poll(c, type ? type : &dummy, &sink, &result);
	if (rc == MP_LOCAL_NOTHING)
		rc = mp_srv_receive(c, type ? type : &dummy, &sink,
				    mp_time_deadline(msec_timeout), true,
				    &result);
	L->view_mode = false;
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	if (rc < 0)
		return mp_fail(rc);
	if (result >= 0) {
		*data = c->pub->receive_allmsg[result];
		*len = c->pub->datalen;
		c->pub->datalenr = c->pub->datalen;
	} else if (result == MESSIP_MSG_NOREPLY) {
		*data = L->scratch;
		*len = c->pub->datalenr;
	}
	return result;
}

MESSIP_EXPORT void *messip_reply_loan(messip_channel_t *ch, int index,
				      size_t len)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_local_held *h;
	struct mp_local *L;
	struct mp_rloan *r;
	void *b;

	if (!c || !c->server || !index_waits(c, index))
		return mp_fail_ptr(-EINVAL);
	if (len > MESSIP_MAX_MSGLEN)
		return mp_fail_ptr(-EMSGSIZE);
	if (c->srv.slots[index].inproc)
		return mp_inproc_reply_loan(c, index, len);
	L = local_get(c);
	if (!L)
		return mp_fail_ptr(-ENOMEM);
	h = held_index(c, index);
	if (h && !h->heap && L->seg) {
		b = mp_chseg_reply_buf(L->seg, h->ticket, NULL);
		if (b)
			return b; /* area B of its slot: no copy at all */
		/* Withdrawn or its client dead: any buffer will do, the
		 * reply is dropped. */
	}
	rloan_free(L, index); /* a loan of an earlier request there */
	r = mp_realloc(L->rloans, sizeof(*r) * (size_t)(L->nrloans + 1));
	if (!r)
		return mp_fail_ptr(-ENOMEM);
	L->rloans = r;
	b = mp_alloc(len ? len : 1);
	if (!b)
		return mp_fail_ptr(-ENOMEM);
	r[L->nrloans].index = index;
	r[L->nrloans].buf = b;
	L->nrloans++;
	return b;
}

MESSIP_EXPORT int messip_reply_loaned(messip_channel_t *ch, int index,
				      int32_t answer, void *buf, int len,
				      int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	int rc;

	if (!c || !c->server)
		return mp_fail(-EINVAL);
	rc = messip_reply(ch, index, answer, buf, len, msec_timeout);
	/* A heap loan ends with the reply (the local path frees it in
	 * mp_local_reply); on timeout the index, and its loan, live on. */
	if (c->local && !index_waits(c, index))
		rloan_free(c->local, index);
	return rc;
}
