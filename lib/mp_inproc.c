/*
 * mp_inproc — the in-process path (see mp_inproc.h for the design: the
 * registry, the mailbox, request states, waking, thread exit).
 *
 * Locks, outermost first: reg_lock (the registry), box->lock (one
 * mailbox), hold_lock (which server thread holds which request).  No
 * lock is held while waiting.  A request's state, refs and waiting are
 * atomics; every ordering choice is commented where it is made.
 *
 * Everything here may run in any thread of the process: a server channel
 * and each client handle are used by one thread at a time (messip.h), but
 * a mailbox and its requests are shared between the client and server
 * threads, and a thread-exit destructor may touch the requests the
 * exiting thread held.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "messip.h"
#include "mp_cnx.h"
#include "mp_futex.h"
#include "mp_inproc.h"
#include "mp_srv.h"
#include "mp_time.h"

#define MP_INPROC_LOANS	  8	      /* as mp_local: loans per handle */
#define MP_INPROC_BUFDEF  256	      /* the manager's default_buffered */
#define MP_INPROC_BUFMAX  (1 << 20)   /* the manager's cap */
#define MP_INPROC_PUMP_NS 100000000LL /* client: look at the manager link */

enum rq_state {
	RQ_QUEUED = 1,
	RQ_TAKEN,
	RQ_REPLYING,
	RQ_DONE,
	RQ_CANCELED,
};

enum rq_kind { RK_SEND = 1, RK_PING, RK_BUF, RK_EVENT };

struct mp_inproc_thr;

/* One mailbox entry: a request (with its reply slot and waiter), a ping,
 * a buffered message or an event. */
struct mp_inproc_req {
	struct mp_inproc_req *next; /* box queue (box lock) */
	uint32_t state;		    /* enum rq_state; futex word */
	uint32_t refs;		    /* client + server (atomic) */
	uint32_t waiting;	    /* the client sleeps on state (atomic) */
	int kind;
	int32_t type; /* sender's type; EVENT: the MESSIP_MSG_* code */
	char id[MESSIP_MAXLEN_ID + 1]; /* sender (subject of an event) */
	/* Reply (written by the server between TAKEN and DONE). */
	const struct mp_iov_sink *sink; /* copy the reply there, or NULL */
	int rc;				/* 0 or -ESRCH / -ENOMEM */
	int32_t answer;
	uint32_t rlen;
	int32_t stored;
	const void *rdata; /* the reply, when kept (sink NULL) */
	void *rbuf;	   /* owned reply buffer (loaned or a copy) */
	size_t rcap;
	/* The server thread holding it (hold_lock). */
	struct mp_inproc_thr *sthr;
	struct mp_inproc_req *hnext, *hprev;
	/* The payload: len bytes at data, inside this allocation. */
	uint32_t len;
	size_t cap;
	unsigned char data[];
};

/* Per thread: the requests it took as a server and did not reply to. */
struct mp_inproc_thr {
	struct mp_inproc_req *head;
};

struct mp_inproc_box {
	pthread_mutex_t lock;
	struct mp_inproc_box *next; /* registry (reg_lock) */
	uint32_t refs;		    /* server + clients (atomic) */
	pid_t pid;		    /* the process that created it */
	char addr[MP_SOCK_ADDR_MAX];
	char name[MESSIP_CHANNEL_NAME_MAXLEN + 1];
	/* Under lock. */
	bool dead;
	struct mp_inproc_req *head, *tail;
	uint32_t nbuf, maxbuf;
	bool armed;   /* the server sleeps: write efd on the next post */
	bool efd_set; /* efd was written and not read since */
	bool fdmode;  /* keep efd readable while something is queued */
	int efd;
	uint32_t room_waiters;
	/* Atomics. */
	uint32_t pending;  /* entries queued: the server's spin reads it */
	uint32_t room;	   /* futex word: bumped when a buffered entry goes */
	struct mp_src src; /* MP_SRC_WAKE in the server's epoll */
};

struct mp_inproc {
	struct mp_inproc_box *box;
	bool server;
	/* Server. */
	bool turn;
	bool fdmode; /* box->fdmode, read without its lock */
	struct mp_spin spin;
	struct mp_inproc_req *pend; /* taken, not handed out (ENOMEM) */
	/* Client. */
	struct mp_spin cspin;
	int64_t last_pump;
	struct mp_inproc_req *loans[MP_INPROC_LOANS];
	struct mp_inproc_req *view; /* its reply is viewed (send_view) */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mp_inproc_box *reg_head;
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t thr_once = PTHREAD_ONCE_INIT;
static pthread_key_t thr_key;
static bool thr_key_ok;

/* ------------------------------------------------------------------ */
/* Requests.                                                           */

static struct mp_inproc_req *req_new(int kind, size_t cap)
{
	struct mp_inproc_req *r = malloc(sizeof(*r) + cap);

	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->cap = cap;
	r->refs = 1;
	return r;
}

static void req_put(struct mp_inproc_req *r)
{
	/* Acq_rel: the last owner sees every write of the others (the
	 * reply, the server's copy) before it frees. */
	if (r && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		free(r->rbuf);
		free(r);
	}
}

static void req_get(struct mp_inproc_req *r)
{
	__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

/* Finish a request: rc, then DONE.  The caller won the CAS into
 * REPLYING (or owns the request alone). */
static void req_done(struct mp_inproc_req *r, int rc)
{
	r->rc = rc;
	/* Seq_cst: publishes the reply (release) and orders this store
	 * before the load of waiting (Dekker with req_wait's sleep). */
	__atomic_store_n(&r->state, RQ_DONE, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&r->waiting, __ATOMIC_SEQ_CST))
		mp_futex_wake(&r->state, 1);
}

/* Fail a taken request with rc (server gone): false if the client had
 * withdrawn it or it was already answered. */
static bool req_fail_taken(struct mp_inproc_req *r, int rc)
{
	uint32_t s = RQ_TAKEN;

	if (!__atomic_compare_exchange_n(&r->state, &s, RQ_REPLYING, false,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return false;
	req_done(r, rc);
	return true;
}

/* ------------------------------------------------------------------ */
/* Server threads holding requests.                                    */

static void thr_exit(void *arg)
{
	struct mp_inproc_thr *t = arg;
	struct mp_inproc_req *list = NULL, *r;

	/* Unlink everything first (a reference each keeps them alive once
	 * the lock is dropped), then fail them: the clients learn that
	 * their server thread is gone, as if its process had died. */
	pthread_mutex_lock(&hold_lock);
	while ((r = t->head) != NULL) {
		t->head = r->hnext;
		r->sthr = NULL;
		r->hprev = NULL;
		req_get(r);
		r->hnext = list;
		list = r;
	}
	pthread_mutex_unlock(&hold_lock);
	free(t);
	while ((r = list) != NULL) {
		list = r->hnext;
		r->hnext = NULL;
		req_fail_taken(r, -ESRCH); /* a later reply is dropped */
		req_put(r);
	}
}

static void thr_key_init(void)
{
	thr_key_ok = pthread_key_create(&thr_key, thr_exit) == 0;
}

/* Note that this thread now holds r (taken as a server).  Without a key
 * or memory the request is simply not watched (its client then waits for
 * a reply or its own timeout, as when a server thread hangs). */
static void hold(struct mp_inproc_req *r)
{
	struct mp_inproc_thr *t;

	pthread_once(&thr_once, thr_key_init);
	if (!thr_key_ok)
		return;
	t = pthread_getspecific(thr_key);
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t || pthread_setspecific(thr_key, t) != 0) {
			free(t);
			return;
		}
	}
	pthread_mutex_lock(&hold_lock);
	r->sthr = t;
	r->hprev = NULL;
	r->hnext = t->head;
	if (t->head)
		t->head->hprev = r;
	t->head = r;
	pthread_mutex_unlock(&hold_lock);
}

static void unhold(struct mp_inproc_req *r)
{
	pthread_mutex_lock(&hold_lock);
	if (r->sthr) {
		if (r->hprev)
			r->hprev->hnext = r->hnext;
		else
			r->sthr->head = r->hnext;
		if (r->hnext)
			r->hnext->hprev = r->hprev;
		r->sthr = NULL;
		r->hnext = r->hprev = NULL;
	}
	pthread_mutex_unlock(&hold_lock);
}

/* ------------------------------------------------------------------ */
/* Mailbox.                                                            */

static void box_put(struct mp_inproc_box *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		pthread_mutex_destroy(&b->lock);
		free(b);
	}
}

/* Make efd readable if the server asked for it.  Box lock held: the
 * write and the server's read of efd are ordered by that lock, so a
 * signal is never read away behind a post's back. */
static void box_signal(struct mp_inproc_box *b)
{
	uint64_t v = 1;

	if (!b->armed || b->efd < 0)
		return;
	b->armed = b->fdmode; /* fd mode: stays armed */
	if (!b->efd_set && write(b->efd, &v, sizeof(v)) == sizeof(v))
		b->efd_set = true;
}

/* Box lock held: make efd unreadable (the server is looking). */
static void box_drain(struct mp_inproc_box *b)
{
	uint64_t v;

	if (b->efd_set && b->efd >= 0 && read(b->efd, &v, sizeof(v)) >= 0)
		b->efd_set = false;
}

/* Append r to the queue: 0, or -ESRCH when the server is gone. */
static int box_post(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	pthread_mutex_lock(&b->lock);
	if (b->dead) {
		pthread_mutex_unlock(&b->lock);
		return -ESRCH;
	}
	r->next = NULL;
	if (r->kind != RK_BUF && r->kind != RK_EVENT)
		__atomic_store_n(&r->state, RQ_QUEUED, __ATOMIC_RELAXED);
	if (b->tail)
		b->tail->next = r;
	else
		b->head = r;
	b->tail = r;
	/* Release: a server spinning on pending, then taking the lock, sees
	 * the entry (the lock orders it anyway; pending is only a hint). */
	__atomic_add_fetch(&b->pending, 1, __ATOMIC_RELEASE);
	box_signal(b);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

/* Box lock held: take r out of the queue if it is there. */
static bool box_unlink(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	struct mp_inproc_req **pp = &b->head, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp != r)
			continue;
		*pp = r->next;
		if (b->tail == r)
			b->tail = prev;
		r->next = NULL;
		__atomic_sub_fetch(&b->pending, 1, __ATOMIC_RELAXED);
		return true;
	}
	return false;
}

/* A buffered entry left the queue: wake a sender waiting for room. */
static void box_room(struct mp_inproc_box *b, bool waiters)
{
	/* Release: the waiter re-checks nbuf under the lock anyway; the
	 * bump only makes its futex wait return. */
	__atomic_add_fetch(&b->room, 1, __ATOMIC_RELEASE);
	if (waiters)
		mp_futex_wake(&b->room, INT32_MAX);
}

/* ------------------------------------------------------------------ */
/* Registry.                                                           */

static void reg_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
}

static void reg_release(void)
{
	pthread_mutex_unlock(&reg_lock);
}

static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void reg_init(void)
{
	/* A fork while another thread holds the registry lock must not
	 * leave the child with a lock nobody will release. */
	pthread_atfork(reg_prepare, reg_release, reg_release);
}

static bool disabled(void)
{
	const char *v = getenv("MESSIP_NO_INPROC");

	return v && *v && strcmp(v, "0") != 0;
}

static struct mp_inproc *state_new(struct messip_channel_priv *c)
{
	struct mp_inproc *P = calloc(1, sizeof(*P));

	if (P) {
		P->server = c->server;
		c->inproc = P;
	}
	return P;
}

int mp_inproc_srv_open(struct messip_channel_priv *c, int32_t maxbuf)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct mp_inproc_box *b;
	struct mp_inproc *P;

	if (disabled())
		return 0;
	pthread_once(&reg_once, reg_init);
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	if (pthread_mutex_init(&b->lock, NULL) != 0) {
		free(b);
		return -ENOMEM;
	}
	b->refs = 1;
	b->pid = getpid();
	b->maxbuf = maxbuf > 0 ? (uint32_t)(maxbuf > MP_INPROC_BUFMAX
						    ? MP_INPROC_BUFMAX
						    : maxbuf)
			       : MP_INPROC_BUFDEF;
	snprintf(b->addr, sizeof(b->addr), "%s", c->addr);
	snprintf(b->name, sizeof(b->name), "%s", c->pub->name);
	b->src.kind = MP_SRC_WAKE; /* receive looks at the mailbox anyway */
	b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ev.data.ptr = &b->src;
	if (b->efd < 0 || epoll_ctl(c->srv.epfd, EPOLL_CTL_ADD, b->efd, &ev)) {
		int rc = -errno;

		if (b->efd >= 0)
			close(b->efd);
		box_put(b);
		return rc;
	}
	P = state_new(c);
	if (!P) {
		close(b->efd);
		box_put(b);
		return -ENOMEM;
	}
	P->box = b;
	pthread_mutex_lock(&reg_lock);
	b->next = reg_head;
	reg_head = b;
	pthread_mutex_unlock(&reg_lock);
	return 0;
}

void mp_inproc_cli_prepare(struct messip_channel_priv *c)
{
	struct mp_inproc_box *b;
	pid_t me = getpid();

	mp_inproc_close(c); /* a reconnect: look again */
	pthread_mutex_lock(&reg_lock);
	for (b = reg_head; b; b = b->next)
		if (b->pid == me && strcmp(b->addr, c->addr) == 0 &&
		    strcmp(b->name, c->pub->name) == 0)
			break;
	if (b)
		__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&reg_lock);
	if (!b)
		return;
	if (!state_new(c)) {
		box_put(b); /* no memory: the other paths serve */
		return;
	}
	c->inproc->box = b;
}

bool mp_inproc_cli_active(const struct messip_channel_priv *c)
{
	return c->inproc && !c->inproc->server;
}

/* ------------------------------------------------------------------ */
/* Closing.                                                            */

static void srv_close(struct messip_channel_priv *c, struct mp_inproc *P)
{
	struct mp_inproc_box *b = P->box;
	struct mp_inproc_req *q, *r;
	bool waiters;

	pthread_mutex_lock(&reg_lock);
	for (struct mp_inproc_box **pp = &reg_head; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);

	/* Dead first: nothing is queued after this. */
	pthread_mutex_lock(&b->lock);
	b->dead = true;
	q = b->head;
	b->head = b->tail = NULL;
	__atomic_store_n(&b->pending, 0, __ATOMIC_RELAXED);
	/* The queued requests are now the server's to fail: TAKEN under
	 * the lock, so a client's withdrawal races through the CAS. */
	for (r = q; r; r = r->next)
		if (r->kind == RK_SEND || r->kind == RK_PING)
			__atomic_store_n(&r->state, RQ_TAKEN, __ATOMIC_RELAXED);
	waiters = b->room_waiters > 0;
	b->nbuf = 0;
	b->armed = false;
	if (b->efd >= 0) {
		/* A forked child must not take the parent's entry out of the
		 * epoll both share. */
		if (b->pid == getpid() && c->srv.epfd >= 0)
			epoll_ctl(c->srv.epfd, EPOLL_CTL_DEL, b->efd, NULL);
		close(b->efd);
		b->efd = -1;
	}
	pthread_mutex_unlock(&b->lock);
	box_room(b, waiters); /* blocked buffered senders: ESRCH */

	while ((r = q) != NULL) {
		q = r->next;
		r->next = NULL;
		if (r->kind == RK_SEND || r->kind == RK_PING)
			req_fail_taken(r, -ESRCH);
		req_put(r);
	}
	if (P->pend) {
		req_fail_taken(P->pend, -ESRCH);
		req_put(P->pend);
		P->pend = NULL;
	}
	/* Requests handed to the program and not replied to. */
	for (int i = 0; i < c->srv.nslots; i++) {
		r = c->srv.slots[i].inproc;
		if (!r)
			continue;
		c->srv.slots[i].inproc = NULL;
		if (c->pub->receive_allmsg)
			c->pub->receive_allmsg[i] = NULL;
		unhold(r);
		req_fail_taken(r, -ESRCH);
		req_put(r);
	}
	box_put(b);
}

static void cli_end_view(struct mp_inproc *P)
{
	req_put(P->view);
	P->view = NULL;
}

void mp_inproc_close(struct messip_channel_priv *c)
{
	struct mp_inproc *P = c->inproc;

	if (!P)
		return;
	if (P->server) {
		srv_close(c, P);
	} else {
		cli_end_view(P);
		for (int i = 0; i < MP_INPROC_LOANS; i++)
			req_put(P->loans[i]);
		box_put(P->box);
	}
	free(P);
	c->inproc = NULL;
}

/* ------------------------------------------------------------------ */
/* Server: taking.                                                     */

static void set_result(struct messip_channel_priv *c, const char *id,
		       int32_t datalen, int32_t stored)
{
	messip_channel_t *pub = c->pub;

	memset(pub->remote_id, 0, sizeof(pub->remote_id));
	memcpy(pub->remote_id, id, MESSIP_MAXLEN_ID);
	pub->datalen = datalen;
	pub->datalenr = stored;
}

/* Give request r to the program: an index, the copy, the result. */
static int deliver(struct messip_channel_priv *c, struct mp_inproc *P,
		   struct mp_inproc_req *r, int32_t *type,
		   const struct mp_iov_sink *sink, bool view, int *result)
{
	int32_t stored = (int32_t)r->len;
	int idx, rc;

	P->pend = r; /* until it is out */
	idx = mp_srv_index_alloc(c);
	if (idx < 0)
		return idx;
	if (!view) {
		rc = mp_iov_put(sink, r->data, r->len, &stored);
		if (rc < 0)
			return rc;
	}
	P->pend = NULL;
	c->srv.slots[idx].inproc = r;
	c->srv.slots[idx].canceled = false;
	c->pub->receive_allmsg[idx] = r->data;
	hold(r);
	*type = r->type;
	set_result(c, r->id, (int32_t)r->len, stored);
	*result = idx;
	return 0;
}

/* Pop the queue's head (box lock taken here): NULL when empty. */
static struct mp_inproc_req *box_pop(struct mp_inproc_box *b)
{
	struct mp_inproc_req *r;
	bool waiters = false;

	pthread_mutex_lock(&b->lock);
	r = b->head;
	if (!r) {
		/* Empty: efd may stand for entries already taken.  In fd
		 * mode the program sleeps in poll: arm for the next post. */
		box_drain(b);
		if (b->fdmode)
			b->armed = true;
		pthread_mutex_unlock(&b->lock);
		return NULL;
	}
	b->head = r->next;
	if (!b->head)
		b->tail = NULL;
	r->next = NULL;
	__atomic_sub_fetch(&b->pending, 1, __ATOMIC_RELAXED);
	if (r->kind == RK_BUF) {
		b->nbuf--;
		waiters = b->room_waiters > 0;
	} else if (r->kind != RK_EVENT) {
		/* Relaxed: the client reads it under this lock (withdrawal)
		 * or through its CAS. */
		__atomic_store_n(&r->state, RQ_TAKEN, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&b->lock);
	if (r->kind == RK_BUF)
		box_room(b, waiters);
	return r;
}

int mp_inproc_take(struct messip_channel_priv *c, int32_t *type,
		   const struct mp_iov_sink *sink, bool view, int *result)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_req *r;
	int32_t stored = 0;
	int rc;

	if (!P || !P->server)
		return MP_INPROC_NOTHING;
	if (P->pend)
		return deliver(c, P, P->pend, type, sink, view, result);
	/* Bounded: pings are answered here and do not end the loop. */
	for (int guard = 0; guard < 64; guard++) {
		/* A hint: an empty look needs no lock (fd mode always
		 * locks, to clear the eventfd). */
		if (!__atomic_load_n(&P->box->pending, __ATOMIC_ACQUIRE) &&
		    !P->fdmode)
			return MP_INPROC_NOTHING;
		r = box_pop(P->box);
		if (!r)
			return MP_INPROC_NOTHING;
		switch (r->kind) {
		case RK_PING:
			req_fail_taken(r, 0); /* unless withdrawn meanwhile */
			req_put(r);
			continue;
		case RK_SEND:
			return deliver(c, P, r, type, sink, view, result);
		case RK_BUF:
			rc = mp_iov_put(sink, r->data, r->len, &stored);
			if (rc < 0) {
				P->pend = NULL;
				/* Keep it at the head for the next call. */
				pthread_mutex_lock(&P->box->lock);
				r->next = P->box->head;
				P->box->head = r;
				if (!P->box->tail)
					P->box->tail = r;
				P->box->nbuf++;
				__atomic_add_fetch(&P->box->pending, 1,
						   __ATOMIC_RELAXED);
				pthread_mutex_unlock(&P->box->lock);
				return rc;
			}
			*type = r->type;
			set_result(c, r->id, (int32_t)r->len, stored);
			*result = MESSIP_MSG_NOREPLY;
			req_put(r);
			return 0;
		default: /* RK_EVENT: none is posted yet; kept for a client
			  * that goes with asynchronous requests outstanding
			  * (MESSIP_MSG_DISMISSED, see the report) */
			*type = 0;
			set_result(c, r->id, 0, 0);
			*result = r->type;
			req_put(r);
			return 0;
		}
	}
	return MP_INPROC_NOTHING;
}

bool mp_inproc_turn(struct messip_channel_priv *c)
{
	struct mp_inproc *P = c->inproc;

	P->turn = !P->turn;
	return P->turn;
}

bool mp_inproc_idle(struct messip_channel_priv *c, int64_t until)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_box *b;
	struct mp_spin_wait w = {0, false, false, false, false};
	bool got = false;

	if (!P || !P->server)
		return false;
	b = P->box;
	/* Acquire: pairs with box_post's release of pending. */
	while (!got && mp_spin_again(&P->spin, &w, until))
		got = __atomic_load_n(&b->pending, __ATOMIC_ACQUIRE) != 0;
	if (!got) {
		/* Arm under the lock that posts take: a post either comes
		 * before (seen here) or sees armed and writes efd. */
		pthread_mutex_lock(&b->lock);
		got = b->head != NULL;
		if (!got) {
			box_drain(b);
			b->armed = true;
		}
		pthread_mutex_unlock(&b->lock);
		w.slept = !got;
	}
	mp_spin_end(&P->spin, &w, got);
	return got;
}

void mp_inproc_fd_mode(struct messip_channel_priv *c)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_box *b;

	if (!P || !P->server)
		return;
	b = P->box;
	P->fdmode = true;
	pthread_mutex_lock(&b->lock);
	b->fdmode = true;
	b->armed = true;
	if (b->head)
		box_signal(b);
	pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------ */
/* Server: replying.                                                   */

/* Does [p, p+n) lie inside r's payload or reply buffer? */
static const void *own_region(const struct mp_inproc_req *r, const void *p,
			      size_t n)
{
	const unsigned char *x = p;

	if (x >= r->data && x + n <= r->data + r->len)
		return p;
	if (r->rbuf && x >= (unsigned char *)r->rbuf &&
	    x + n <= (unsigned char *)r->rbuf + r->rcap)
		return p;
	return NULL;
}

/* Write the reply into r (state REPLYING, ours): into the client's sink,
 * or kept in r for a view.  0 or -ENOMEM. */
static int put_reply(struct mp_inproc_req *r, const struct iovec *iov,
		     int iovcnt, uint32_t total)
{
	const void *one = iovcnt == 1 ? iov[0].iov_base : NULL;
	unsigned char *tmp = NULL;
	int rc = 0;

	r->rlen = total;
	if (!r->sink && one && own_region(r, one, total)) {
		/* The loaned reply buffer, or an echo of the request:
		 * handed over as it is. */
		r->rdata = one;
		r->stored = (int32_t)total;
		return 0;
	}
	if (total && !one) {
		/* Several pieces: gather them once. */
		tmp = malloc(total);
		if (!tmp)
			return -ENOMEM;
		for (int i = 0, off = 0; i < iovcnt; i++) {
			if (iov[i].iov_len)
				memcpy(tmp + off, iov[i].iov_base,
				       iov[i].iov_len);
			off += (int)iov[i].iov_len;
		}
		one = tmp;
	}
	if (r->sink) {
		/* The client waits: straight into its buffer. */
		rc = mp_iov_put(r->sink, one, total, &r->stored);
		free(tmp);
		return rc;
	}
	if (tmp) {
		free(r->rbuf);
		r->rbuf = tmp;
		r->rcap = total;
	} else if (total) {
		if (r->rcap < total || !r->rbuf) {
			void *nb = malloc(total);

			if (!nb)
				return -ENOMEM;
			free(r->rbuf);
			r->rbuf = nb;
			r->rcap = total;
		}
		memcpy(r->rbuf, one, total);
	}
	r->rdata = r->rbuf;
	r->stored = (int32_t)total;
	return 0;
}

int mp_inproc_reply(struct messip_channel_priv *c, int index, int32_t answer,
		    const struct iovec *iov, int iovcnt, uint32_t total)
{
	struct mp_inproc_req *r = c->srv.slots[index].inproc;
	uint32_t s = RQ_TAKEN;

	unhold(r);
	/* Acquire: the client's sink (written before it posted) is read. */
	if (__atomic_compare_exchange_n(&r->state, &s, RQ_REPLYING, false,
					__ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
		r->answer = answer;
		req_done(r, put_reply(r, iov, iovcnt, total));
	}
	/* Otherwise withdrawn after a timeout, or failed when the thread
	 * that took it exited: the reply is dropped. */
	c->srv.slots[index].inproc = NULL;
	c->pub->receive_allmsg[index] = NULL;
	req_put(r);
	return 0;
}

void *mp_inproc_reply_loan(struct messip_channel_priv *c, int index, size_t len)
{
	struct mp_inproc_req *r = c->srv.slots[index].inproc;
	void *nb;

	/* The request's own reply buffer: only this thread touches it
	 * until the reply publishes it. */
	if (r->rbuf && r->rcap >= len)
		return r->rbuf;
	nb = malloc(len ? len : 1);
	if (!nb) {
		errno = ENOMEM;
		return NULL;
	}
	free(r->rbuf);
	r->rbuf = nb;
	r->rcap = len;
	return nb;
}

/* ------------------------------------------------------------------ */
/* Client.                                                             */

/* Service the manager link now and then while waiting: a process that
 * only sends keeps its registration alive, as on the other paths. */
static void cli_pump(struct messip_channel_priv *c, struct mp_inproc *P,
		     int64_t now)
{
	if (now - P->last_pump >= MP_INPROC_PUMP_NS) {
		P->last_pump = now;
		mp_cnx_pump(c->cnx);
	}
}

/* Wait until r is DONE: 0, or -ETIMEDOUT (still pending). */
static int req_wait(struct messip_channel_priv *c, struct mp_inproc *P,
		    struct mp_inproc_req *r, int64_t deadline)
{
	struct mp_spin_wait w = {0, false, false, false, false};
	bool got = false;
	int rc = 0;

	/* Acquire everywhere: DONE publishes the reply. */
	while (!got && mp_spin_again(&P->cspin, &w, deadline))
		got = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE) == RQ_DONE;
	while (!got) {
		int64_t now = mp_time_now_ns(), end;
		uint32_t s;

		w.slept = true;
		if (now >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		cli_pump(c, P, now);
		end = now + MP_INPROC_PUMP_NS;
		if (end > deadline)
			end = deadline;
		/* Seq_cst: waiting is visible before we read state (Dekker
		 * with req_done). */
		__atomic_store_n(&r->waiting, 1, __ATOMIC_SEQ_CST);
		s = __atomic_load_n(&r->state, __ATOMIC_SEQ_CST);
		if (s != RQ_DONE)
			mp_futex_wait(&r->state, s, end);
		__atomic_store_n(&r->waiting, 0, __ATOMIC_RELAXED);
		got = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE) == RQ_DONE;
	}
	mp_spin_end(&P->cspin, &w, got);
	return rc;
}

/*
 * Withdraw r after a timeout.  0: withdrawn (the server never sees it, or
 * drops its reply); 1: the reply won the race and is complete.
 */
static int withdraw(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	uint32_t s = RQ_QUEUED;
	bool unlinked;

	pthread_mutex_lock(&b->lock);
	unlinked = __atomic_load_n(&r->state, __ATOMIC_RELAXED) == RQ_QUEUED &&
		   box_unlink(b, r);
	if (unlinked)
		__atomic_store_n(&r->state, RQ_CANCELED, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&b->lock);
	if (unlinked) {
		req_put(r); /* the queue's reference */
		return 0;
	}
	s = RQ_TAKEN;
	if (__atomic_compare_exchange_n(&r->state, &s, RQ_CANCELED, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return 0;
	/* REPLYING: the server is copying the reply, wait it out (it does
	 * not block); DONE: already there. */
	while (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) != RQ_DONE)
		mp_cpu_relax();
	return 1;
}

/*
 * Post r (payload in place) and wait for its reply: into sink, or kept
 * for a view (sink NULL: *view, *vlen; r is then kept as P->view).  r's
 * client reference is consumed.
 */
static int roundtrip(struct messip_channel_priv *c, struct mp_inproc *P,
		     struct mp_inproc_req *r, int32_t *answer,
		     const struct mp_iov_sink *sink, const void **view,
		     int *vlen, int64_t deadline)
{
	int rc;

	memcpy(r->id, c->cnx->id, sizeof(r->id));
	r->sink = sink;
	req_get(r); /* the queue's, then the server's reference */
	rc = box_post(P->box, r);
	if (rc < 0) {
		req_put(r);
		req_put(r);
		return rc;
	}
	rc = req_wait(c, P, r, deadline);
	if (rc == -ETIMEDOUT && withdraw(P->box, r) == 1)
		rc = 0;
	if (rc == 0)
		rc = r->rc;
	if (rc == 0 && r->kind == RK_SEND) {
		if (answer)
			*answer = r->answer;
		c->pub->datalen = (int32_t)r->rlen;
		c->pub->datalenr = r->stored;
		if (view) {
			*view = r->rdata;
			*vlen = (int)r->rlen;
			P->view = r;
			return 0;
		}
	}
	req_put(r);
	return rc;
}

int mp_inproc_send(struct messip_channel_priv *c, int32_t type,
		   const struct iovec *iov, int iovcnt, uint32_t total,
		   int32_t *answer, const struct mp_iov_sink *sink,
		   int64_t deadline)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_req *r;
	unsigned char *p;

	cli_end_view(P);
	/* The request is copied once, into an object of its own: a server
	 * may still look at it after a timeout ended this call. */
	r = req_new(RK_SEND, total);
	if (!r)
		return -ENOMEM;
	p = r->data;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	r->len = total;
	r->type = type;
	return roundtrip(c, P, r, answer, sink, NULL, NULL, deadline);
}

int mp_inproc_ping(struct messip_channel_priv *c, int64_t deadline)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_req *r;

	cli_end_view(P);
	r = req_new(RK_PING, 0);
	if (!r)
		return -ENOMEM;
	return roundtrip(c, P, r, NULL, NULL, NULL, NULL, deadline);
}

int mp_inproc_bsend(struct messip_channel_priv *c, int32_t type,
		    const void *data, uint32_t len, int msec_timeout)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_box *b = P->box;
	struct mp_inproc_req *r = req_new(RK_BUF, len);
	int64_t deadline = 0;
	int rc;

	if (!r)
		return -ENOMEM;
	if (len)
		memcpy(r->data, data, len);
	r->len = len;
	r->type = type;
	memcpy(r->id, c->cnx->id, sizeof(r->id));
	pthread_mutex_lock(&b->lock);
	for (;;) {
		uint32_t seq;

		if (b->dead) {
			rc = -ESRCH;
			break;
		}
		if (b->nbuf < b->maxbuf) {
			rc = (int)b->nbuf;
			b->nbuf++;
			pthread_mutex_unlock(&b->lock);
			if (box_post(b, r) < 0) {
				/* Died in between: give the count back. */
				pthread_mutex_lock(&b->lock);
				b->nbuf--;
				rc = -ESRCH;
				break;
			}
			return rc;
		}
		/* Full: wait for room (the deadline read only now). */
		if (msec_timeout == 0) {
			rc = -ETIMEDOUT;
			break;
		}
		if (!deadline)
			deadline = mp_time_deadline(msec_timeout);
		if (mp_time_now_ns() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		seq = __atomic_load_n(&b->room, __ATOMIC_ACQUIRE);
		b->room_waiters++;
		pthread_mutex_unlock(&b->lock);
		cli_pump(c, P, mp_time_now_ns());
		rc = mp_futex_wait(
			&b->room, seq,
			deadline < mp_time_now_ns() + MP_INPROC_PUMP_NS
				? deadline
				: mp_time_now_ns() + MP_INPROC_PUMP_NS);
		pthread_mutex_lock(&b->lock);
		b->room_waiters--;
	}
	pthread_mutex_unlock(&b->lock);
	req_put(r);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Client: zero copy.                                                  */

void *mp_inproc_loan(struct messip_channel_priv *c, size_t len)
{
	struct mp_inproc *P = c->inproc;
	int i;

	cli_end_view(P);
	for (i = 0; i < MP_INPROC_LOANS && P->loans[i]; i++)
		;
	if (i == MP_INPROC_LOANS) {
		errno = EAGAIN;
		return NULL;
	}
	/* The request object itself: what the program writes there is the
	 * message the server will view. */
	P->loans[i] = req_new(RK_SEND, len);
	if (!P->loans[i]) {
		errno = ENOMEM;
		return NULL;
	}
	return P->loans[i]->data;
}

static int loan_find(struct mp_inproc *P, const void *buf)
{
	for (int i = 0; buf && i < MP_INPROC_LOANS; i++)
		if (P->loans[i] && P->loans[i]->data == buf)
			return i;
	return -1;
}

int mp_inproc_release(struct messip_channel_priv *c, const void *buf)
{
	struct mp_inproc *P = c->inproc;
	int i = loan_find(P, buf);

	if (i >= 0) {
		req_put(P->loans[i]);
		P->loans[i] = NULL;
		return 0;
	}
	if (P->view && buf && P->view->rdata == buf) {
		cli_end_view(P);
		return 0;
	}
	return -EINVAL;
}

int mp_inproc_send_loaned(struct messip_channel_priv *c, int32_t type,
			  void *buf, int len, int32_t *answer,
			  const struct mp_iov_sink *sink, const void **view,
			  int *vlen, int64_t deadline)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_req *r;
	int i = loan_find(P, buf);

	if (i < 0 || len < 0)
		return -EINVAL;
	if ((size_t)len > P->loans[i]->cap)
		return -EMSGSIZE;
	cli_end_view(P); /* "until the next call that sends" */
	r = P->loans[i];
	P->loans[i] = NULL;
	r->len = (uint32_t)len;
	r->type = type;
	return roundtrip(c, P, r, answer, view ? NULL : sink, view, vlen,
			 deadline);
}
