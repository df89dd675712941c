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
#include "mp_alloc.h"
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

/* Which threads watch a request: the server thread that took it, the
 * client thread that posted it asynchronously. */
enum { H_SRV, H_CLI, H_N };

struct mp_inproc_thr;
struct mp_inproc_box;

/* A request on a thread's list (hold_lock). */
struct mp_inproc_hold {
	struct mp_inproc_thr *thr; /* NULL: on no list */
	struct mp_inproc_req *next, *prev;
};

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
	/* The server thread holding it, the client thread that posted it
	 * asynchronously (hold_lock). */
	struct mp_inproc_hold h[H_N];
	/* Asynchronous requests (mp_inproc_post): the box it was posted to
	 * and the reply_to channel's box to wake, each with a reference. */
	struct mp_inproc_box *box, *notify;
	bool note; /* queued again as a withdrawal note (box lock) */
	bool gone; /* withdrawn because its client thread ended (written
		      before the withdrawal publishes it) */
	/* The payload: len bytes at data, inside this allocation. */
	uint32_t len;
	size_t cap;
	unsigned char data[];
};

/* Per thread: the requests it took as a server and did not reply to
 * (head[H_SRV]), those it posted asynchronously and nobody collected yet
 * (head[H_CLI]). */
struct mp_inproc_thr {
	struct mp_inproc_req *head[H_N];
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
	uint32_t poked;	   /* a return-to-sender reply for this channel
			      is in (mp_inproc_notifies) */
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
	struct mp_inproc_req *r = mp_alloc(sizeof(*r) + cap);

	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->cap = cap;
	r->refs = 1;
	return r;
}

static void box_put(struct mp_inproc_box *b);
static void box_poke(struct mp_inproc_box *b);
static void abandon(struct mp_inproc_req *list);

static void req_put(struct mp_inproc_req *r)
{
	/* Acq_rel: the last owner sees every write of the others (the
	 * reply, the server's copy) before it frees. */
	if (r && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		box_put(r->box);
		box_put(r->notify);
		free(r->rbuf);
		free(r);
	}
}

static void req_get(struct mp_inproc_req *r)
{
	__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

/* Finish a request: rc, then DONE.  The caller won the CAS into
 * REPLYING (or owns the request alone) and holds a reference. */
static void req_done(struct mp_inproc_req *r, int rc)
{
	r->rc = rc;
	/* Seq_cst: publishes the reply (release) and orders this store
	 * before the load of waiting (Dekker with req_wait's sleep). */
	__atomic_store_n(&r->state, RQ_DONE, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&r->waiting, __ATOMIC_SEQ_CST))
		mp_futex_wake(&r->state, 1);
	/* Return to sender: the receive on reply_to collects it (after
	 * the DONE above, so that a receive woken by the poke sees it). */
	if (r->notify)
		box_poke(r->notify);
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
/* Threads holding requests.                                           */

/* hold_lock held: take r off the list it is on (list `w`). */
static void thr_unlink(struct mp_inproc_req *r, int w)
{
	struct mp_inproc_hold *h = &r->h[w];

	if (!h->thr)
		return;
	if (h->prev)
		h->prev->h[w].next = h->next;
	else
		h->thr->head[w] = h->next;
	if (h->next)
		h->next->h[w].prev = h->prev;
	h->thr = NULL;
	h->next = h->prev = NULL;
}

/* hold_lock held: empty t's list w into a chain through h[w].next, a
 * reference each (they stay alive once the lock is dropped). */
static struct mp_inproc_req *thr_take_all(struct mp_inproc_thr *t, int w)
{
	struct mp_inproc_req *list = NULL, *r;

	while ((r = t->head[w]) != NULL) {
		thr_unlink(r, w);
		req_get(r);
		r->h[w].next = list;
		list = r;
	}
	return list;
}

static void thr_exit(void *arg)
{
	struct mp_inproc_thr *t = arg;
	struct mp_inproc_req *list, *mine, *r;

	pthread_mutex_lock(&hold_lock);
	list = thr_take_all(t, H_SRV);
	mine = thr_take_all(t, H_CLI);
	pthread_mutex_unlock(&hold_lock);
	free(t);
	/* Requests it took as a server: the clients learn that their
	 * server thread is gone, as if its process had died. */
	while ((r = list) != NULL) {
		list = r->h[H_SRV].next;
		r->h[H_SRV].next = NULL;
		req_fail_taken(r, -ESRCH); /* a later reply is dropped */
		req_put(r);
	}
	/* Requests it posted and left outstanding: withdrawn, and their
	 * servers told, as if its process had died. */
	abandon(mine);
}

static void thr_key_init(void)
{
	thr_key_ok = pthread_key_create(&thr_key, thr_exit) == 0;
}

/* Note that this thread now holds r (w: taken as a server, posted as a
 * client).  Without a key or memory the request is simply not watched
 * (a server's client then waits for a reply or its own timeout, as when
 * a server thread hangs; a client's request stays outstanding). */
static void hold(struct mp_inproc_req *r, int w)
{
	struct mp_inproc_thr *t;

	pthread_once(&thr_once, thr_key_init);
	if (!thr_key_ok)
		return;
	t = pthread_getspecific(thr_key);
	if (!t) {
		t = mp_calloc(1, sizeof(*t));
		if (!t || pthread_setspecific(thr_key, t) != 0) {
			free(t);
			return;
		}
	}
	pthread_mutex_lock(&hold_lock);
	r->h[w].thr = t;
	r->h[w].prev = NULL;
	r->h[w].next = t->head[w];
	if (t->head[w])
		t->head[w]->h[w].prev = r;
	t->head[w] = r;
	pthread_mutex_unlock(&hold_lock);
}

static void unhold(struct mp_inproc_req *r, int w)
{
	pthread_mutex_lock(&hold_lock);
	thr_unlink(r, w);
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

/* Box lock held, box alive: append r and wake the server. */
static void box_append(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	r->next = NULL;
	if (b->tail)
		b->tail->next = r;
	else
		b->head = r;
	b->tail = r;
	/* Release: a server spinning on pending, then taking the lock, sees
	 * the entry (the lock orders it anyway; pending is only a hint). */
	__atomic_add_fetch(&b->pending, 1, __ATOMIC_RELEASE);
	box_signal(b);
}

/* Append r to the queue: 0, or -ESRCH when the server is gone. */
static int box_post(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	pthread_mutex_lock(&b->lock);
	if (b->dead) {
		pthread_mutex_unlock(&b->lock);
		return -ESRCH;
	}
	if (r->kind != RK_BUF && r->kind != RK_EVENT)
		__atomic_store_n(&r->state, RQ_QUEUED, __ATOMIC_RELAXED);
	box_append(b, r);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

/*
 * r, which the server took, was withdrawn (CANCELED): queue it again as
 * a note, so that a server that opted in reports MESSIP_MSG_CANCELED for
 * its index (mp_inproc_take).  The request itself is the note: once
 * taken it is on no queue, and it can be withdrawn only once.
 */
static void box_post_note(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	pthread_mutex_lock(&b->lock);
	if (!b->dead) {
		req_get(r); /* the queue's */
		r->note = true;
		box_append(b, r);
	}
	pthread_mutex_unlock(&b->lock);
}

/* A reply to a request that returns to b's channel is in: wake its
 * receive (mp_inproc_idle looks at poked). */
static void box_poke(struct mp_inproc_box *b)
{
	/* Relaxed is enough: a receive that misses it has armed the box
	 * under the lock taken next, so box_signal wakes it. */
	__atomic_store_n(&b->poked, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&b->lock);
	box_signal(b);
	pthread_mutex_unlock(&b->lock);
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
	struct mp_inproc *P = mp_calloc(1, sizeof(*P));

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
	b = mp_calloc(1, sizeof(*b));
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
	 * the lock, so a client's withdrawal races through the CAS.  A
	 * withdrawal note is withdrawn already. */
	for (r = q; r; r = r->next)
		if ((r->kind == RK_SEND || r->kind == RK_PING) && !r->note)
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
		unhold(r, H_SRV);
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
	int idx = mp_srv_index_give(c, r->data, r->len, r->type, r->id, sink,
				    view, type);

	P->pend = idx < 0 ? r : NULL; /* out, or next time */
	if (idx < 0)
		return idx;
	c->srv.slots[idx].inproc = r;
	hold(r, H_SRV);
	*result = idx;
	return 0;
}

/* A withdrawal note for r: MESSIP_MSG_CANCELED with its index, if the
 * program still holds it and asked for reports; else MP_INPROC_NOTHING
 * (the reply came first, or a classic server: nothing to say). */
static int take_note(struct messip_channel_priv *c,
		     const struct mp_inproc_req *r, int32_t *type, int *result)
{
	for (int i = 0; c->srv.opt_canceled && i < c->srv.nslots; i++) {
		if (c->srv.slots[i].inproc != r)
			continue;
		*type = i;
		set_result(c, r->id, 0, 0);
		*result = MESSIP_MSG_CANCELED;
		return 0;
	}
	return MP_INPROC_NOTHING;
}

/* Pop the queue's head (box lock taken here): NULL when empty.  *note:
 * it is a withdrawal note (read and cleared under the lock: the client
 * may queue the same request as a note as soon as the lock is dropped). */
static struct mp_inproc_req *box_pop(struct mp_inproc_box *b, bool *note)
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
	*note = r->note;
	r->note = false;
	__atomic_sub_fetch(&b->pending, 1, __ATOMIC_RELAXED);
	if (r->kind == RK_BUF) {
		b->nbuf--;
		waiters = b->room_waiters > 0;
	} else if (r->kind != RK_EVENT && !*note) {
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
	bool note;
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
		r = box_pop(P->box, &note);
		if (!r)
			return MP_INPROC_NOTHING;
		if (note) {
			rc = take_note(c, r, type, result);
			req_put(r);
			if (rc == 0)
				return 0;
			continue;
		}
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
		default: /* RK_EVENT: MESSIP_MSG_DISMISSED (abandon) */
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

/* Was b poked since the last look?  (Reads before it writes: the spin
 * calls it often.) */
static bool box_unpoke(struct mp_inproc_box *b)
{
	return __atomic_load_n(&b->poked, __ATOMIC_RELAXED) &&
	       __atomic_exchange_n(&b->poked, 0, __ATOMIC_RELAXED);
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
	/* Acquire: pairs with box_post's release of pending.  poked: the
	 * caller's next take collects return-to-sender replies (and their
	 * states carry the ordering), so it is taken back at once. */
	while (!got && mp_spin_again(&P->spin, &w, until))
		got = __atomic_load_n(&b->pending, __ATOMIC_ACQUIRE) != 0 ||
		      box_unpoke(b);
	if (!got) {
		/* Arm under the lock that posts and pokes take: a post
		 * either comes before (seen here) or sees armed and writes
		 * efd. */
		pthread_mutex_lock(&b->lock);
		got = b->head != NULL || box_unpoke(b);
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
		tmp = mp_alloc(total);
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
			void *nb = mp_alloc(total);

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
	int rc = 0;

	unhold(r, H_SRV);
	/* Acquire: the client's sink (written before it posted) is read;
	 * on failure, gone (written before the client's withdrawal). */
	if (__atomic_compare_exchange_n(&r->state, &s, RQ_REPLYING, false,
					__ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
		r->answer = answer;
		req_done(r, put_reply(r, iov, iovcnt, total));
	} else if (r->gone) {
		/* Withdrawn when its client thread ended: the client is
		 * gone, as on the other paths when its process dies. */
		rc = -ESRCH;
	}
	/* Otherwise withdrawn (a timeout, a cancel, its handle closed), or
	 * failed when the thread that took it exited: the reply is dropped
	 * and that is a success. */
	c->srv.slots[index].inproc = NULL;
	c->pub->receive_allmsg[index] = NULL;
	req_put(r);
	return rc;
}

void *mp_inproc_reply_loan(struct messip_channel_priv *c, int index, size_t len)
{
	struct mp_inproc_req *r = c->srv.slots[index].inproc;
	void *nb;

	/* The request's own reply buffer: only this thread touches it
	 * until the reply publishes it. */
	if (r->rbuf && r->rcap >= len)
		return r->rbuf;
	nb = mp_alloc(len ? len : 1);
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

/* Has r an outcome (DONE; CANCELED: withdrawn when the thread that
 * posted it ended)?  Acquire: pairs with the store that published it. */
static bool req_final(struct mp_inproc_req *r)
{
	return __atomic_load_n(&r->state, __ATOMIC_ACQUIRE) >= RQ_DONE;
}

/* Wait until r is final (req_final): 0, or -ETIMEDOUT (still pending). */
static int req_wait(struct messip_channel_priv *c, struct mp_inproc *P,
		    struct mp_inproc_req *r, int64_t deadline)
{
	struct mp_spin_wait w = {0, false, false, false, false};
	bool got = false;
	int rc = 0;

	/* Acquire everywhere (req_final): DONE publishes the reply. */
	while (!got && mp_spin_again(&P->cspin, &w, deadline))
		got = req_final(r);
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
		if (s < RQ_DONE)
			mp_futex_wait(&r->state, s, end);
		__atomic_store_n(&r->waiting, 0, __ATOMIC_RELAXED);
		got = req_final(r);
	}
	mp_spin_end(&P->cspin, &w, got);
	return rc;
}

/*
 * Withdraw r (a timeout, messip_request_cancel, its handle or thread
 * going).  0: withdrawn (the server never sees it, or drops its reply and
 * is sent a note for its MESSIP_MSG_CANCELED report); 1: it already has
 * its outcome (the reply won the race and is complete, the server failed
 * it, or it was withdrawn before).  Never sleeps.
 */
static int withdraw(struct mp_inproc_box *b, struct mp_inproc_req *r)
{
	uint32_t s = RQ_QUEUED;
	bool unlinked;

	pthread_mutex_lock(&b->lock);
	unlinked = __atomic_load_n(&r->state, __ATOMIC_RELAXED) == RQ_QUEUED &&
		   box_unlink(b, r);
	/* Release: another thread waiting on r (after a hand-over) reads
	 * gone once it sees CANCELED. */
	if (unlinked)
		__atomic_store_n(&r->state, RQ_CANCELED, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&b->lock);
	if (unlinked) {
		req_put(r); /* the queue's reference */
		return 0;
	}
	s = RQ_TAKEN;
	/* Acq_rel: publishes gone to the server's failing CAS. */
	if (__atomic_compare_exchange_n(&r->state, &s, RQ_CANCELED, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		if (r->kind == RK_SEND)
			box_post_note(b, r);
		return 0;
	}
	/* REPLYING: the server is copying the reply, wait it out (it does
	 * not block); DONE or CANCELED: already final. */
	while (!req_final(r))
		mp_cpu_relax();
	return 1;
}

/* Post r (payload in place) from c: 0, or -ESRCH (the server is gone:
 * r, with the client's reference, is freed). */
static int req_post(struct messip_channel_priv *c, struct mp_inproc *P,
		    struct mp_inproc_req *r)
{
	int rc;

	memcpy(r->id, c->cnx->id, sizeof(r->id));
	req_get(r); /* the queue's, then the server's reference */
	rc = box_post(P->box, r);
	if (rc < 0) {
		req_put(r);
		req_put(r);
	}
	return rc;
}

/* A request of type with the payload gathered from iov (total bytes), or
 * NULL (no memory). */
static struct mp_inproc_req *req_gather(int32_t type, const struct iovec *iov,
					int iovcnt, uint32_t total)
{
	struct mp_inproc_req *r = req_new(RK_SEND, total);
	unsigned char *p;

	if (!r)
		return NULL;
	p = r->data;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	r->len = total;
	r->type = type;
	return r;
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

	r->sink = sink;
	rc = req_post(c, P, r);
	if (rc < 0)
		return rc;
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

	cli_end_view(P);
	/* The request is copied once, into an object of its own: a server
	 * may still look at it after a timeout ended this call. */
	r = req_gather(type, iov, iovcnt, total);
	if (!r)
		return -ENOMEM;
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

/* ------------------------------------------------------------------ */
/* Client: asynchronous requests (mp_async.c).                         */

bool mp_inproc_notifies(const struct messip_channel_priv *rt)
{
	return rt->inproc && rt->inproc->server;
}

int mp_inproc_post(struct messip_channel_priv *c, int32_t type,
		   const struct iovec *iov, int iovcnt, uint32_t total,
		   struct messip_channel_priv *reply_to,
		   struct mp_inproc_req **out)
{
	struct mp_inproc *P = c->inproc;
	struct mp_inproc_req *r;
	int rc;

	cli_end_view(P);
	r = req_gather(type, iov, iovcnt, total);
	if (!r)
		return -ENOMEM;
	/* References: withdrawing needs the box after the handle is gone
	 * (a thread's exit), a reply pokes reply_to's box. */
	r->box = P->box;
	__atomic_add_fetch(&r->box->refs, 1, __ATOMIC_RELAXED);
	if (reply_to && mp_inproc_notifies(reply_to)) {
		r->notify = reply_to->inproc->box;
		__atomic_add_fetch(&r->notify->refs, 1, __ATOMIC_RELAXED);
	}
	/* No sink: the reply is kept in r until it is collected. */
	rc = req_post(c, P, r);
	if (rc < 0)
		return rc;
	hold(r, H_CLI);
	*out = r;
	return 0;
}

int mp_inproc_req_wait(struct messip_channel_priv *c, struct mp_inproc_req *r,
		       int64_t deadline, int32_t *answer, const void **data,
		       uint32_t *len)
{
	struct mp_inproc none, *P = c->inproc;

	if (!req_final(r)) {
		if (deadline == 0)
			return -ETIMEDOUT;
		/* The handle's state spins and pumps; a handle that looked
		 * for its server again (a reconnect) may have none now: r is
		 * self-contained. */
		if (!mp_inproc_cli_active(c)) {
			memset(&none, 0, sizeof(none));
			P = &none;
		}
		if (req_wait(c, P, r, deadline) < 0)
			return -ETIMEDOUT;
	}
	if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) == RQ_CANCELED)
		return -ESRCH; /* its thread ended (abandon) */
	if (r->rc < 0)
		return r->rc;
	*answer = r->answer;
	*data = r->rdata;
	*len = r->rlen;
	return 0;
}

int mp_inproc_req_cancel(struct mp_inproc_req *r)
{
	return req_final(r) ? 1 : withdraw(r->box, r);
}

void mp_inproc_req_drop(struct mp_inproc_req *r)
{
	if (!req_final(r))
		withdraw(r->box, r);
	unhold(r, H_CLI);
	req_put(r);
}

/* Tell b that the client id is gone (its thread ended with requests
 * there outstanding).  Without memory the server is not told. */
static void post_dismissed(struct mp_inproc_box *b, const char *id)
{
	struct mp_inproc_req *e = req_new(RK_EVENT, 0);

	if (!e)
		return;
	e->type = MESSIP_MSG_DISMISSED;
	memcpy(e->id, id, sizeof(e->id));
	if (box_post(b, e) < 0)
		req_put(e);
}

/*
 * The thread that posted list (a chain through h[H_CLI].next, a
 * reference each) ended: withdraw each request not yet answered (as if
 * its process had died: a reply to it fails with ESRCH, a later wait on it
 * returns ESRCH), then give each server concerned one
 * MESSIP_MSG_DISMISSED per client, behind the withdrawal notes.
 */
static void abandon(struct mp_inproc_req *list)
{
	struct mp_inproc_req *r, *gone = NULL;

	while ((r = list) != NULL) {
		list = r->h[H_CLI].next;
		r->h[H_CLI].next = NULL;
		if (req_final(r)) {
			req_put(r); /* answered: collected as usual */
			continue;
		}
		r->gone = true; /* published by the withdrawal */
		if (withdraw(r->box, r) != 0) {
			req_put(r);
			continue;
		}
		/* Seq_cst: the withdrawal before the load of waiting (a
		 * thread that took the handle over may sleep on it). */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&r->waiting, __ATOMIC_SEQ_CST))
			mp_futex_wake(&r->state, 1);
		r->h[H_CLI].next = gone;
		gone = r;
	}
	while ((r = gone) != NULL) {
		bool told = false;

		gone = r->h[H_CLI].next;
		for (struct mp_inproc_req *o = gone; o && !told;
		     o = o->h[H_CLI].next)
			told = o->box == r->box && !strcmp(o->id, r->id);
		if (!told)
			post_dismissed(r->box, r->id);
		req_put(r);
	}
}
