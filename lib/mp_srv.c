/*
 * mp_srv — server side of a channel: the receive loop, direct client
 * connections, the work queue and receive indices (see mp_srv.h).
 *
 * Invariants:
 *   - an item is in exactly one place: the queue, a slot (index awaiting
 *     its reply), or freed;
 *   - a peer's refs counts its items (queued or in a slot); a closed peer
 *     is freed when refs reaches 0, so an index always points at a peer
 *     that can at least answer "gone" (ESRCH);
 *   - a peer with MP_PEER_MAX_REQ requests queued or unreplied is not read
 *     (flow control: a client cannot make the server buffer without
 *     bound; the socket's own window pushes back on it);
 *   - wake_set mirrors the eventfd; once fd_exported, it is true exactly
 *     while receive has something to hand out without waiting
 *     (mp_srv_update_wake() is called after anything that changes that);
 *     before, it stays false and the eventfd untouched;
 *   - replies to a client whose next request already waits at the head
 *     of the queue are gathered in its link's output (gather) and written
 *     together when receive moves on to anything else or sleeps: a
 *     client with many requests in flight gets its replies in a few
 *     writes, and a reply waits at most until the program's next receive;
 *   - nothing read from a peer is trusted: frames come through the codec,
 *     every field is checked before use, a peer that breaks the protocol
 *     is disconnected (never an assert).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "messip.h"
#include "mp_async.h"
#include "mp_alloc.h"
#include "mp_chan.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_inproc.h"
#include "mp_local.h"
#include "mp_log.h"
#include "mp_srv.h"
#include "mp_time.h"
#include "mp_timer.h"

#define MP_PEER_MAX_REQ 64 /* requests in flight per client link */
#define MP_SRV_EVENTS	16 /* epoll events per wait */
#define MP_SRV_READS	16 /* reads per wakeup for one large frame */
#define MP_SRV_ACCEPTS	16 /* accepts per wakeup */
#define MP_HUP_CHECK_NS 1000000 /* see mp_srv_reply */
#define MP_SLOTS_INIT	16
#define MP_STEAL_MIN	4096 /* a link buffer taken over, not copied */
/* A direct client must send its HELLO within this bound after the accept,
 * else it is dropped: a peer that connects and stalls must not hold a
 * descriptor and a peer slot for ever (doc/protocol.md; the manager's
 * default handshake_timeout_ms is the same). */
#define MP_HELLO_NS	(5 * 1000000000LL)
/* Out of descriptors: how often the listening socket is tried again while
 * the program keeps receiving (and at once when one of our connections
 * closes). */
#define MP_ACCEPT_RETRY_NS (100 * 1000000LL)
/* Until a peer proved the ticket, the only frame it may send is AUTH: a
 * larger one is refused on its header, so it makes us allocate nothing
 * beyond its socket and record. */
#define MP_HS_DATA_MAX	(MP_AUTH_NONCE + MP_AUTH_MAC)
/* Failed proofs are logged at most once per this period per channel
 * (a flood of them must not flood the program's log). */
#define MP_AUTH_LOG_NS	(1000000000LL)
#define MP_NOTHING	INT_MIN
#define MP_GATHER_MAX	65536 /* replies gathered for one write at most */
#define ACK_BATCH_NS	50000 /* a BACK younger than this: hold the next */
#define ACK_BATCH_MAX	256   /* ... unless this many are held */

struct mp_peer {
	struct mp_src src; /* MP_SRC_PEER */
	struct mp_link link;
	struct mp_peer *next;
	messip_id_t id;
	int32_t regno;
	int refs; /* items pointing here */
	int nreq; /* requests queued or awaiting a reply */
	bool hello;
	bool closed;
	bool paused;
	bool want_out;
	bool local;	/* a same-host client on the segment (mp_local) */
	bool authed;	/* proved the channel ticket (then HELLO may come) */
	bool challenged; /* our CHALLENGE is sent (under TLS: once the
			  * handshake is done) */
	int64_t hello_by; /* !hello: dropped at this time (MP_HELLO_NS) */
	uint8_t ns[MP_AUTH_NONCE]; /* our CHALLENGE: spent by one AUTH */
};

enum mp_item_kind { MP_ITEM_SEND, MP_ITEM_BUF, MP_ITEM_EVENT };

struct mp_item {
	struct mp_item *next;
	int kind;
	int32_t type;	      /* SEND/BUF: the sender's type; EVENT: code */
	uint32_t reqid;	      /* SEND */
	struct mp_peer *peer; /* SEND */
	uint64_t seq;	      /* BUF */
	int64_t taken_ns;     /* SEND: when receive handed it out */
	messip_id_t id;	      /* sender (BUF), subject (EVENT) */
	uint32_t len;
	unsigned char *data; /* inline, or into owned */
	void *owned;	     /* a link's input buffer taken over, or NULL */
	unsigned char inline_data[];
};

#define container_of(p, type, member)                                          \
	((type *)(void *)((char *)(p)-offsetof(type, member)))

/* ------------------------------------------------------------------ */
/* Queue, slots, wake.                                                 */

/*
 * A new item holding a copy of data, or, for a large frame that was all
 * the link's input buffer held, that buffer itself (no copy).
 */
static struct mp_item *item_new(int kind, const void *data, uint32_t len,
				struct mp_link *from)
{
	void *owned = NULL;
	struct mp_item *it;

	if (from && len >= MP_STEAL_MIN)
		owned = mp_link_steal_input(from);
	it = mp_alloc(sizeof(*it) + (owned ? 0 : len));
	if (!it) {
		free(owned);
		return NULL;
	}
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	it->len = len;
	it->owned = owned;
	it->data = owned ? (unsigned char *)data : it->inline_data;
	if (len && !owned)
		memcpy(it->data, data, len);
	return it;
}

static void item_free(struct mp_item *it)
{
	if (it) {
		free(it->owned);
		free(it);
	}
}

static void enqueue(struct mp_srv *s, struct mp_item *it)
{
	it->next = NULL;
	if (s->qtail)
		s->qtail->next = it;
	else
		s->qhead = it;
	s->qtail = it;
	s->qlen++;
}

static void push_front(struct mp_srv *s, struct mp_item *it)
{
	it->next = s->qhead;
	s->qhead = it;
	if (!s->qtail)
		s->qtail = it;
	s->qlen++;
}

static struct mp_item *dequeue(struct mp_srv *s)
{
	struct mp_item *it = s->qhead;

	if (!it)
		return NULL;
	s->qhead = it->next;
	if (!s->qhead)
		s->qtail = NULL;
	s->qlen--;
	it->next = NULL;
	return it;
}

/* Remove queued requests matching peer (and reqid unless all). */
static int unqueue(struct mp_srv *s, struct mp_peer *p, bool all,
		   uint32_t reqid)
{
	struct mp_item **pp = &s->qhead, *prev = NULL;
	int n = 0;

	while (*pp) {
		struct mp_item *it = *pp;

		if (it->kind == MP_ITEM_SEND && it->peer == p &&
		    (all || it->reqid == reqid)) {
			*pp = it->next;
			s->qlen--;
			p->refs--;
			p->nreq--;
			item_free(it);
			n++;
			continue;
		}
		prev = it;
		pp = &it->next;
	}
	s->qtail = prev;
	return n;
}

static bool manager_dead(const struct messip_channel_priv *c)
{
	return c->cnx->state == MP_CNX_DEAD;
}

void mp_srv_update_wake(struct messip_channel_priv *c)
{
	struct mp_srv *s = &c->srv;
	uint64_t v = 1;
	bool pending;

	/* Receive looks at the queue before it sleeps, so only a program
	 * that waits on messip_channel_fd itself needs the eventfd: until
	 * it asks for the fd, no queue change costs a system call. */
	if (!s->fd_exported || s->wakefd < 0)
		return;
	/* Frames the manager sent right behind the answer to a request
	 * wait in the link's buffer, where the socket no longer reports
	 * them: they count as something to hand out (receive pumps them). */
	pending = s->qhead || s->ncancel_tell || s->rq_head ||
		  mp_timer_pending(c) ||
		  (manager_dead(c) && !s->shutdown_told) ||
		  mp_link_frame_ready(&c->cnx->mgr) ||
		  /* housekeeping due now: input TLS holds for a direct
		   * client (peer_tls_after), a HELLO deadline */
		  (s->chore_ns != MP_TIME_FOREVER &&
		   s->chore_ns <= mp_time_now_ns());
	if (pending == s->wake_set)
		return;
	/* An eventfd counter: write makes it readable, read resets it. */
	if (pending) {
		if (write(s->wakefd, &v, sizeof(v)) != sizeof(v))
			return;
	} else {
		if (read(s->wakefd, &v, sizeof(v)) != sizeof(v))
			return;
	}
	s->wake_set = pending;
}

static int slots_grow(struct messip_channel_priv *c)
{
	struct mp_srv *s = &c->srv;
	int n = s->nslots ? s->nslots * 2 : MP_SLOTS_INIT;
	struct mp_slot *ns;
	void **na;

	if (n > (1 << 20))
		return -ENOMEM;
	ns = mp_realloc(s->slots, sizeof(*ns) * (size_t)n);
	if (!ns)
		return -ENOMEM;
	s->slots = ns;
	na = mp_realloc(c->pub->receive_allmsg, sizeof(*na) * (size_t)n);
	if (!na)
		return -ENOMEM;
	c->pub->receive_allmsg = na;
	for (int i = s->nslots; i < n; i++) {
		ns[i].item = NULL;
		ns[i].canceled = false;
		ns[i].cancel_tell = false;
		ns[i].local = NULL;
		ns[i].inproc = NULL;
		na[i] = NULL;
	}
	s->nslots = n;
	return 0;
}

/* Lowest free index (small numbers, reused after the reply). */
static int slot_alloc(struct messip_channel_priv *c)
{
	struct mp_srv *s = &c->srv;
	int i, rc;

	for (i = 0; i < s->nslots; i++)
		if (!s->slots[i].item && !s->slots[i].local &&
		    !s->slots[i].inproc)
			return i;
	rc = slots_grow(c);
	return rc < 0 ? rc : i;
}

static void set_result(struct messip_channel_priv *c, const char *id,
		       int32_t datalen, int32_t stored);

int mp_srv_index_give(struct messip_channel_priv *c, const void *data,
		      uint32_t len, int32_t msgtype, const char *id,
		      const struct mp_iov_sink *sink, bool view, int32_t *type)
{
	int32_t stored = (int32_t)len;
	int idx = slot_alloc(c), rc;

	if (idx < 0)
		return idx;
	if (!view) {
		rc = mp_iov_put(sink, data, len, &stored);
		if (rc < 0)
			return rc;
	}
	c->srv.slots[idx].canceled = false;
	c->pub->receive_allmsg[idx] = (void *)data;
	*type = msgtype;
	set_result(c, id, (int32_t)len, stored);
	return idx;
}

/* ------------------------------------------------------------------ */
/* Peers (direct client connections).                                  */

static void peer_events(struct messip_channel_priv *c, struct mp_peer *p)
{
	struct epoll_event ev = {.data.ptr = &p->src};

	ev.events = (p->paused ? 0 : EPOLLIN) | (p->want_out ? EPOLLOUT : 0);
	epoll_ctl(c->srv.epfd, EPOLL_CTL_MOD, p->link.fd, &ev);
}

/* The next housekeeping time is at the latest t. */
static void chore_at(struct mp_srv *s, int64_t t)
{
	if (t < s->chore_ns)
		s->chore_ns = t;
}

/*
 * Watch the listening socket level-triggered (normal) or, while the
 * process has no descriptor for a new connection, edge-triggered: the
 * pending connection then stays in the backlog without waking every
 * epoll_wait (no busy loop), and accept_all runs again when a new one
 * arrives, when one of our connections closes, or at the retry time.
 */
static void listen_arm(struct messip_channel_priv *c, bool edge)
{
	struct mp_srv *s = &c->srv;
	struct epoll_event ev = {.events = EPOLLIN | (edge ? EPOLLET : 0),
				 .data.ptr = &s->lsrc};

	if (s->accept_edge == edge)
		return;
	s->accept_edge = edge;
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->lfd, &ev);
}

static void peer_free(struct messip_channel_priv *c, struct mp_peer *p)
{
	for (struct mp_peer **pp = &c->srv.peers; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	mp_link_close(&p->link);
	free(p);
}

static void peer_close(struct messip_channel_priv *c, struct mp_peer *p,
		       const char *why)
{
	if (c->srv.gather == p)
		c->srv.gather = NULL; /* its output goes with its link */
	if (!p->closed) {
		if (why)
			mp_log(MESSIP_LOG_WARNING, "MESSIP-PEER-DROPPED",
			       "channel %s: client \"%s\" disconnected: %s",
			       c->pub->name, p->id, why);
		epoll_ctl(c->srv.epfd, EPOLL_CTL_DEL, p->link.fd, NULL);
		mp_link_close(&p->link);
		p->closed = true;
		/* A descriptor came free: a connection left waiting for one
		 * is taken now (accept_all on the next wait). */
		listen_arm(c, false);
		/* Its requests not yet received have nobody to answer. */
		unqueue(&c->srv, p, true, 0);
		if (p->local) {
			p->local = false;
			mp_local_peer_gone(c);
		}
	}
	if (p->refs == 0)
		peer_free(c, p);
}

/* Send a frame without data to a peer, never blocking; the tail of a
 * frame the socket could not take at once is flushed on EPOLLOUT. */
static int peer_send(struct messip_channel_priv *c, struct mp_peer *p,
		     const struct mp_wire_msg *m, const struct iovec *iov,
		     int iovcnt, int64_t deadline)
{
	int rc = mp_link_send(&p->link, m, iov, iovcnt, deadline);

	if (rc == 0 && mp_link_pending_out(&p->link) && !p->want_out) {
		p->want_out = true;
		peer_events(c, p);
	}
	return rc;
}

/* Write the gathered replies (what the socket does not take now is
 * written on EPOLLOUT). */
static void gather_flush(struct messip_channel_priv *c)
{
	struct mp_peer *p = c->srv.gather;
	int rc;

	c->srv.gather = NULL;
	if (!p || p->closed || p->want_out)
		return;
	rc = mp_link_flush(&p->link, mp_time_now_ns());
	if (rc == -EPIPE) {
		peer_close(c, p, NULL);
	} else if (rc < 0) {
		p->want_out = true;
		peer_events(c, p);
	}
}

/* Is p's next request next in the queue (so the program will reply to
 * it soon)? */
static bool next_from(const struct mp_srv *s, const struct mp_peer *p)
{
	return s->qhead && s->qhead->kind == MP_ITEM_SEND &&
	       s->qhead->peer == p;
}

static void cancel(struct messip_channel_priv *c, struct mp_peer *p,
		   uint32_t reqid)
{
	struct mp_srv *s = &c->srv;

	if (unqueue(s, p, false, reqid))
		return;
	for (int i = 0; i < s->nslots; i++) {
		struct mp_item *it = s->slots[i].item;

		if (it && it->peer == p && it->reqid == reqid) {
			/* The index awaits its reply all the same (the
			 * program holds it); a channel that asked is told
			 * by its next receive. */
			if (!s->slots[i].canceled && s->opt_canceled) {
				s->slots[i].cancel_tell = true;
				s->ncancel_tell++;
			}
			s->slots[i].canceled = true;
			return;
		}
	}
}

/* A peer's proof failed: logged once per connection, and at most once
 * per MP_AUTH_LOG_NS per channel (with the count of those not logged). */
static void auth_refused(struct messip_channel_priv *c, struct mp_peer *p,
			 const char *why)
{
	struct mp_srv *s = &c->srv;
	int64_t now = mp_time_now_ns();

	if (now - s->auth_log_ns < MP_AUTH_LOG_NS && s->auth_log_ns) {
		s->auth_unlogged++;
	} else {
		mp_log(MESSIP_LOG_WARNING, "MESSIP-PEER-AUTH",
		       "channel %s: direct connection refused: %s "
		       "(%u more not logged)",
		       c->pub->name, why, s->auth_unlogged);
		s->auth_log_ns = now;
		s->auth_unlogged = 0;
	}
	peer_close(c, p, NULL);
}

/*
 * A frame from a peer that has not proven the ticket (doc/protocol.md,
 * "Direct link authentication"): only AUTH answering our CHALLENGE.  The
 * nonce is spent whatever the outcome (one proof per connection).  A
 * wrong or missing proof is answered AUTH a=EACCES and the connection
 * closed.  false: the peer was closed.
 */
static bool peer_auth(struct messip_channel_priv *c, struct mp_peer *p,
		      const struct mp_wire_msg *m)
{
	uint8_t proof[MP_AUTH_MAC];
	struct mp_wire_msg a;
	struct iovec iov = {proof, sizeof(proof)};
	int rc;

	if (m->op != MP_OP_AUTH) {
		auth_refused(c, p, m->op == MP_OP_HELLO
					   ? "HELLO without proof"
					   : "unexpected frame before proof");
		return false;
	}
	rc = mp_auth_verify(&c->ticket, p->ns, m->data, m->datalen, proof);
	mp_auth_nonce(p->ns, sizeof(p->ns)); /* spent: never verifies again */
	memset(&a, 0, sizeof(a));
	a.op = MP_OP_AUTH;
	a.reqid = m->reqid;
	if (rc < 0) {
		a.a = EACCES;
		peer_send(c, p, &a, NULL, 0, mp_time_now_ns());
		auth_refused(c, p, "wrong proof");
		return false;
	}
	a.datalen = MP_AUTH_MAC;
	if (peer_send(c, p, &a, &iov, 1, mp_time_now_ns()) < 0) {
		peer_close(c, p, NULL);
		return false;
	}
	p->authed = true;
	p->link.max_data = MP_MAX_DATA; /* requests may come now */
	return true;
}

/* One frame from a peer.  false: the peer was closed. */
static bool peer_frame(struct messip_channel_priv *c, struct mp_peer *p,
		       const struct mp_wire_msg *m)
{
	struct mp_wire_msg a;
	struct mp_item *it;

	/* Unproven: AUTH, or the HELLO of a same-host client that says it
	 * uses the segment (checked by mp_local_peer_hello; it may then
	 * send BYE and nothing else: its requests go through the segment,
	 * which /dev/shm permissions guard). */
	if (!p->authed && !(m->op == MP_OP_HELLO && !p->hello && m->u) &&
	    !(m->op == MP_OP_BYE && p->local))
		return peer_auth(c, p, m);
	memset(&a, 0, sizeof(a));
	if (!p->hello) {
		if (m->op != MP_OP_HELLO) {
			peer_close(c, p, "no HELLO");
			return false;
		}
		if (!p->authed) {
			if (!mp_local_peer_hello(c, m)) {
				auth_refused(c, p, "HELLO without proof");
				return false;
			}
			p->local = true; /* counted: peer_close uncounts */
		}
		a.op = MP_OP_WELCOME;
		a.reqid = m->reqid;
		a.a = strcmp(m->name, c->pub->name) ? ENOENT : 0;
		if (peer_send(c, p, &a, NULL, 0, mp_time_now_ns()) < 0 || a.a) {
			peer_close(c, p, NULL);
			return false;
		}
		p->hello = true;
		memcpy(p->id, m->id, sizeof(p->id));
		p->regno = m->c;
		if (p->authed)
			p->local = mp_local_peer_hello(c, m);
		return true;
	}
	switch (m->op) {
	case MP_OP_SEND:
		it = item_new(MP_ITEM_SEND, m->data, m->datalen, &p->link);
		if (!it) {
			peer_close(c, p, "out of memory");
			return false;
		}
		it->type = m->a;
		it->reqid = m->reqid;
		it->peer = p;
		memcpy(it->id, p->id, sizeof(it->id));
		p->refs++;
		if (++p->nreq >= MP_PEER_MAX_REQ && !p->paused) {
			p->paused = true;
			peer_events(c, p);
		}
		enqueue(&c->srv, it);
		return true;
	case MP_OP_CANCEL:
		cancel(c, p, m->reqid);
		return true;
	case MP_OP_PING:
		a.op = MP_OP_PONG;
		a.reqid = m->reqid;
		if (peer_send(c, p, &a, NULL, 0, mp_time_now_ns()) == -EPIPE) {
			peer_close(c, p, NULL);
			return false;
		}
		return true;
	case MP_OP_BYE:
		peer_close(c, p, NULL);
		return false;
	default:
		peer_close(c, p, "unexpected frame");
		return false;
	}
}

/* Decode every complete frame held.  false: the peer was closed. */
static bool peer_drain(struct messip_channel_priv *c, struct mp_peer *p)
{
	struct mp_wire_msg m;
	int rc;

	while (!p->paused && (rc = mp_link_next(&p->link, &m)) != 0) {
		if (rc < 0) {
			peer_close(c, p, "protocol error");
			return false;
		}
		if (!peer_frame(c, p, &m))
			return false;
	}
	return true;
}

static int challenge(struct mp_peer *p);

/* TLS: once the handshake is done, our CHALLENGE goes out (challenge());
 * a handshake step may have left ciphertext to send; and input TLS
 * holds is not reported by the socket, so come back for it at once
 * (srv_chores). */
static void peer_tls_after(struct messip_channel_priv *c, struct mp_peer *p)
{
	if (p->closed || !p->link.tls)
		return;
	if (!p->challenged && mp_tls_ready(p->link.tls) && challenge(p) < 0) {
		peer_close(c, p, NULL);
		return;
	}
	if (mp_link_pending_out(&p->link) && !p->want_out) {
		p->want_out = true;
		peer_events(c, p);
	}
	if (!p->paused && mp_tls_has_input(p->link.tls))
		chore_at(&c->srv, mp_time_now_ns());
}

static void peer_ready(struct messip_channel_priv *c, struct mp_peer *p,
		       uint32_t events)
{
	int rc;

	if (p->closed)
		return;
	if (events & EPOLLOUT) {
		rc = mp_link_flush(&p->link, mp_time_now_ns());
		if (rc == -EPIPE) {
			peer_close(c, p, NULL);
			return;
		}
		if (rc == 0) {
			p->want_out = false;
			peer_events(c, p);
		}
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (p->paused) {
		/* Not reading; a hang-up still ends it. */
		if (events & (EPOLLHUP | EPOLLERR))
			peer_close(c, p, NULL);
		return;
	}
	/* Read until a frame is complete, then stop: the epoll is
	 * level-triggered, so what is left is reported again and other
	 * clients get their turn; a small request costs one read. */
	for (int i = 0; i < MP_SRV_READS; i++) {
		rc = mp_link_fill(&p->link);
		if (rc < 0) {
			peer_close(c, p, rc == -EPIPE ? NULL : "bad frame");
			return;
		}
		if (rc == 0) {
			peer_tls_after(c, p);
			return;
		}
		if (mp_link_frame_ready(&p->link))
			break;
	}
	if (peer_drain(c, p))
		peer_tls_after(c, p);
}

static void peer_unpause(struct messip_channel_priv *c, struct mp_peer *p)
{
	p->paused = false;
	peer_events(c, p);
	if (peer_drain(c, p)) /* frames read before the pause */
		peer_tls_after(c, p);
}

/* Challenge a new peer at once (doc/protocol.md, "Direct link
 * authentication"): it proves the ticket before anything else.  A fresh
 * socket takes this small frame whole; 0, or -errno (drop the peer). */
static int challenge(struct mp_peer *p)
{
	struct iovec iov = {p->ns, sizeof(p->ns)};
	struct mp_wire_msg m;
	int rc;

	/* Under TLS the frame waits for the handshake: mp_link_send could
	 * not write it before (peer_tls_after sends it then). */
	if (p->link.tls && !mp_tls_ready(p->link.tls))
		return 0;
	rc = mp_auth_nonce(p->ns, sizeof(p->ns));
	if (rc < 0)
		return rc;
	p->challenged = true;
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_CHALLENGE;
	m.datalen = MP_AUTH_NONCE;
	rc = mp_link_send(&p->link, &m, &iov, 1, mp_time_now_ns());
	return rc < 0 ? rc : 0;
}

static void accept_all(struct messip_channel_priv *c)
{
	for (int i = 0; i < MP_SRV_ACCEPTS; i++) {
		struct epoll_event ev = {.events = EPOLLIN};
		struct mp_peer *p;
		int fd = mp_sock_accept(c->srv.lfd);

		if (fd == -EAGAIN) {
			listen_arm(c, false);
			return;
		}
		if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS ||
		    fd == -ENOMEM) {
			/* The connection stays pending and the socket
			 * readable: level-triggered, every wait would
			 * return at once (a busy loop).  Wait for an edge
			 * or the retry time instead; the client waits in
			 * the backlog, within its own timeout. */
			if (!c->srv.accept_edge)
				mp_log(MESSIP_LOG_WARNING, "MESSIP-ACCEPT",
				       "channel %s: accept: %s; retrying "
				       "every %lld ms",
				       c->pub->name, strerror(-fd),
				       MP_ACCEPT_RETRY_NS / 1000000);
			listen_arm(c, true);
			c->srv.accept_retry = true;
			chore_at(&c->srv,
				 mp_time_now_ns() + MP_ACCEPT_RETRY_NS);
			return;
		}
		if (fd < 0) {
			mp_log(MESSIP_LOG_ERROR, "MESSIP-ACCEPT",
			       "channel %s: accept: %s", c->pub->name,
			       strerror(-fd));
			return;
		}
		p = mp_calloc(1, sizeof(*p));
		if (!p) {
			close(fd);
			return;
		}
		p->src.kind = MP_SRC_PEER;
		p->hello_by = mp_time_now_ns() + MP_HELLO_NS;
		chore_at(&c->srv, p->hello_by);
		mp_link_init(&p->link, fd, MP_HS_DATA_MAX);
		ev.data.ptr = &p->src;
		/* TLS (MESSIP_TLS_CERT): the handshake runs in the first
		 * reads, within the HELLO bound, and the challenge follows
		 * it (peer_tls_after). */
		if (mp_link_start_tls(&p->link, NULL) < 0 ||
		    challenge(p) < 0 ||
		    epoll_ctl(c->srv.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			mp_link_close(&p->link);
			free(p);
			return;
		}
		p->next = c->srv.peers;
		c->srv.peers = p;
	}
}

/* ------------------------------------------------------------------ */
/* Manager side.                                                       */

void mp_srv_watch_mgr(struct messip_channel_priv *c, int fd, uint32_t events)
{
	struct mp_srv *s = &c->srv;
	struct epoll_event ev = {.events = events, .data.ptr = &c->cnx->src};

	if (s->epfd < 0)
		return;
	if (s->mgr_fd == fd) {
		if (fd >= 0 && events != s->mgr_events)
			epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
		s->mgr_events = events;
		return;
	}
	if (s->mgr_fd >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->mgr_fd, NULL);
	s->mgr_fd = -1;
	if (fd >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
		s->mgr_fd = fd;
	s->mgr_events = events;
}

int mp_srv_push_buffered(struct messip_channel_priv *c,
			 const struct mp_wire_msg *m)
{
	struct mp_srv *s = &c->srv;
	struct mp_item *it;

	if (s->seen_any && m->u <= s->seq_seen)
		return 0; /* re-sent after a resume: already queued */
	it = item_new(MP_ITEM_BUF, m->data, m->datalen, NULL);
	if (!it)
		return -ENOMEM;
	it->type = m->a;
	it->seq = m->u;
	memcpy(it->id, m->id, sizeof(it->id));
	s->seq_seen = m->u;
	s->seen_any = true;
	enqueue(s, it);
	mp_srv_update_wake(c);
	return 0;
}

int mp_srv_push_event(struct messip_channel_priv *c,
		      const struct mp_wire_msg *m)
{
	struct mp_item *it;

	if (m->u && m->u <= c->srv.ev_seen)
		return 0; /* re-sent after a resume: already queued */
	if (m->a != MESSIP_MSG_DISCONNECT && m->a != MESSIP_MSG_DISMISSED &&
	    m->a != MESSIP_MSG_DEATH_PROCESS) {
		mp_log(MESSIP_LOG_WARNING, "MESSIP-EVENT-UNKNOWN",
		       "channel %s: ignored event %d", c->pub->name, (int)m->a);
		return 0;
	}
	it = item_new(MP_ITEM_EVENT, NULL, 0, NULL);
	if (!it)
		return -ENOMEM;
	it->type = m->a;
	it->seq = (uint64_t)(uint32_t)m->c;
	memcpy(it->id, m->id, sizeof(it->id));
	if (m->u)
		c->srv.ev_seen = m->u;
	enqueue(&c->srv, it);
	mp_srv_update_wake(c);
	return 0;
}

void mp_srv_link_restored(struct messip_channel_priv *c, bool new_channel)
{
	struct mp_srv *s = &c->srv;

	if (new_channel) {
		s->seen_any = s->done_any = s->ack_due = false;
		s->ev_seen = 0;
	} else {
		s->ack_due = s->done_any; /* what the manager may have lost */
	}
}

/* Acknowledge what was handed out (cumulative BACK); never blocks. */
static void ack_flush(struct messip_channel_priv *c)
{
	struct mp_wire_msg m;

	if (!c->srv.ack_due)
		return;
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_BACK;
	m.b = c->handle;
	m.u = c->srv.seq_done;
	if (mp_cnx_post(c->cnx, &m) == 0) {
		c->srv.ack_due = false;
		c->srv.ack_held = 0;
		c->srv.ack_ns = mp_time_now_ns();
	}
}

/* ------------------------------------------------------------------ */
/* Receive and reply.                                                  */

static void set_result(struct messip_channel_priv *c, const char *id,
		       int32_t datalen, int32_t stored)
{
	messip_channel_t *pub = c->pub;

	memset(pub->remote_id, 0, sizeof(pub->remote_id));
	/* strnlen: an id from a segment need not be terminated. */
	if (id)
		memcpy(pub->remote_id, id, strnlen(id, MESSIP_MAXLEN_ID));
	pub->datalen = datalen;
	pub->datalenr = stored;
}

/* Report a request withdrawn after it was handed out (ncancel_tell > 0):
 * MESSIP_MSG_CANCELED with its index in *type; the index still awaits
 * its reply, which will be dropped. */
static int take_cancel(struct messip_channel_priv *c, int32_t *type,
		       int *result)
{
	struct mp_srv *s = &c->srv;

	for (int i = 0; i < s->nslots; i++) {
		if (!s->slots[i].cancel_tell)
			continue;
		s->slots[i].cancel_tell = false;
		s->ncancel_tell--;
		*type = i;
		set_result(c, s->slots[i].item->peer->id, 0, 0);
		*result = MESSIP_MSG_CANCELED;
		return 0;
	}
	s->ncancel_tell = 0; /* not reached: the count mirrors the flags */
	return MP_NOTHING;
}

/* Hand out the next thing waiting: 0 with *result, MP_NOTHING, -errno. */
static int take(struct messip_channel_priv *c, int32_t *type,
		const struct mp_iov_sink *sink, int *result)
{
	struct mp_srv *s = &c->srv;
	struct mp_item *it;
	int32_t stored = 0;
	int idx, rc;

	if (manager_dead(c) && !s->shutdown_told) {
		s->shutdown_told = true;
		return -ESHUTDOWN;
	}
	if (mp_timer_take(c, type)) {
		set_result(c, NULL, 0, 0);
		*result = MESSIP_MSG_TIMER;
		return 0;
	}
	if (s->gather && !next_from(s, s->gather))
		gather_flush(c);
	if (s->ncancel_tell)
		return take_cancel(c, type, result);
	rc = s->rq_head ? mp_async_take(c, type, sink, result)
			: MP_ASYNC_NOTHING;
	if (rc != MP_ASYNC_NOTHING)
		return rc;
	it = dequeue(s);
	if (!it)
		return MP_NOTHING;
	switch (it->kind) {
	case MP_ITEM_SEND:
		idx = slot_alloc(c);
		if (idx < 0) {
			push_front(s, it);
			return idx;
		}
		rc = mp_iov_put(sink, it->data, it->len, &stored);
		if (rc < 0) {
			push_front(s, it);
			return rc;
		}
		s->slots[idx].item = it;
		s->slots[idx].canceled = false;
		it->taken_ns = mp_time_now_ns();
		c->pub->receive_allmsg[idx] = it->data;
		*type = it->type;
		set_result(c, it->peer->id, (int32_t)it->len, stored);
		*result = idx;
		return 0;
	case MP_ITEM_BUF:
		rc = mp_iov_put(sink, it->data, it->len, &stored);
		if (rc < 0) {
			push_front(s, it);
			return rc;
		}
		*type = it->type;
		set_result(c, it->id, (int32_t)it->len, stored);
		s->seq_done = it->seq;
		s->done_any = s->ack_due = true;
		item_free(it);
		/* Acknowledge at once (the record leaves the manager's ring,
		 * so a sender waiting for room wakes as soon as the program
		 * has taken a message, not when it next sleeps) - unless the
		 * last BACK is younger than ACK_BATCH_NS: a fast stream then
		 * costs one BACK per batch, not per message.  What is held
		 * goes with the next take past that age, or before receive
		 * sleeps or returns ETIMEDOUT. */
		if (++s->ack_held >= ACK_BATCH_MAX ||
		    mp_time_now_ns() - s->ack_ns >= ACK_BATCH_NS)
			ack_flush(c);
		*result = MESSIP_MSG_NOREPLY;
		return 0;
	default:
		*type = 0;
		set_result(c, it->id, 0, 0);
		*result = it->type;
		item_free(it);
		return 0;
	}
}

static void handle_event(struct messip_channel_priv *c,
			 const struct epoll_event *ev)
{
	struct mp_src *src = ev->data.ptr;

	switch (src->kind) {
	case MP_SRC_MGR:
		mp_cnx_pump(c->cnx);
		break;
	case MP_SRC_LISTEN:
		accept_all(c);
		break;
	case MP_SRC_PEER:
		peer_ready(c, container_of(src, struct mp_peer, src),
			   ev->events);
		break;
	case MP_SRC_TIMER:
		mp_timer_ready(container_of(src, struct mp_timer, src));
		break;
	default:
		break; /* MP_SRC_WAKE: the queue is looked at anyway */
	}
}

/*
 * Housekeeping due at chore_ns: drop direct clients that did not say
 * HELLO in time, try the listening socket again after running out of
 * descriptors, and set the next time.  Cheap when nothing is due: the
 * receive loop calls it only once chore_ns has passed.
 */
static void srv_chores(struct messip_channel_priv *c, int64_t now)
{
	struct mp_srv *s = &c->srv;
	struct mp_peer *p, *next;

	s->chore_ns = MP_TIME_FOREVER;
	if (s->accept_retry) {
		s->accept_retry = false;
		accept_all(c); /* sets it again if still out */
	}
	for (p = s->peers; p; p = next) {
		next = p->next; /* p may be freed */
		if (!p->closed && !p->paused && p->link.tls &&
		    mp_tls_has_input(p->link.tls)) {
			peer_ready(c, p, EPOLLIN); /* peer_tls_after */
			continue;
		}
		if (p->closed || p->hello)
			continue;
		if (now >= p->hello_by)
			peer_close(c, p,
				   p->authed ? "no HELLO within the handshake bound"
					     : "no proof within the handshake bound");
		else
			chore_at(s, p->hello_by);
	}
}

/*
 * Busy-poll the epoll before sleeping in it, when the policy says it pays
 * (mp_spin): the events found (> 0), 0 (nothing: sleep), -1 (errno).
 */
static int srv_spin(struct messip_channel_priv *c, struct epoll_event *evs,
		    int64_t until)
{
	struct mp_spin_wait w = {0, false, false, false, false};
	int n = 0;

	/* Each round pauses first: receive has just found nothing to do,
	 * and a client sharing our CPU gets to run at once. */
	while (n == 0 && mp_spin_again(&c->srv.spin, &w, until))
		n = epoll_wait(c->srv.epfd, evs, MP_SRV_EVENTS, 0);
	mp_spin_end(&c->srv.spin, &w, n > 0);
	return n;
}

/*
 * Must the TCP queue (and timers) go before the same-host path this time?
 * Timers and the ESHUTDOWN report always do; an event does too once the
 * local work before it is out (a client's buffered messages, pushed into
 * the segment before it disconnected, come before its DISCONNECT);
 * otherwise the two take turns.
 */
static bool queue_first(struct messip_channel_priv *c)
{
	struct mp_srv *s = &c->srv;

	if (mp_timer_pending(c) || (manager_dead(c) && !s->shutdown_told))
		return true;
	if (!s->qhead)
		return false;
	if (s->qhead->kind == MP_ITEM_EVENT) {
		if (s->qhead->type == MESSIP_MSG_DISMISSED)
			mp_local_event_ahead(c);
		return false;
	}
	return !mp_local_turn(c);
}

/* take(), and the same-host path when the channel has one. */
static int take_other(struct messip_channel_priv *c, int32_t *type,
		      const struct mp_iov_sink *sink, int *result)
{
	int rc;

	if (c->srv.rq_last)
		mp_async_forget_last(c);
	if (c->srv.r2s_pending)
		mp_async_harvest(c);
	if (!c->local)
		return take(c, type, sink, result);
	if (queue_first(c)) {
		rc = take(c, type, sink, result);
		if (rc == MP_NOTHING)
			rc = mp_local_take(c, type, sink, result);
	} else {
		rc = mp_local_take(c, type, sink, result);
		if (rc == MP_LOCAL_NOTHING)
			rc = take(c, type, sink, result);
	}
	return rc == MP_LOCAL_NOTHING ? MP_NOTHING : rc;
}

/*
 * take_other(), and the in-process mailbox when the channel has one.
 * They take turns; timers and the ESHUTDOWN report go first, an event
 * from the manager goes behind the mailbox (a client's buffered messages,
 * posted before it disconnected, come before its DISCONNECT).
 */
static int take_any(struct messip_channel_priv *c, int32_t *type,
		    const struct mp_iov_sink *sink, int *result)
{
	struct mp_srv *s = &c->srv;
	bool view = mp_local_viewing(c);
	int rc;

	if (!c->inproc)
		return take_other(c, type, sink, result);
	if (!mp_timer_pending(c) && !(manager_dead(c) && !s->shutdown_told) &&
	    ((s->qhead && s->qhead->kind == MP_ITEM_EVENT) ||
	     mp_inproc_turn(c))) {
		rc = mp_inproc_take(c, type, sink, view, result);
		if (rc == MP_INPROC_NOTHING)
			rc = take_other(c, type, sink, result);
	} else {
		rc = take_other(c, type, sink, result);
		if (rc == MP_NOTHING)
			rc = mp_inproc_take(c, type, sink, view, result);
	}
	return rc;
}

int mp_srv_poll(struct messip_channel_priv *c, int32_t *type,
		const struct mp_iov_sink *sink, int *result)
{
	int rc = take_any(c, type, sink, result);

	if (rc != MP_NOTHING)
		mp_srv_update_wake(c);
	return rc;
}

int mp_srv_receive(struct messip_channel_priv *c, int32_t *type,
		   const struct mp_iov_sink *sink, int64_t deadline,
		   bool polled, int *result)
{
	struct epoll_event evs[MP_SRV_EVENTS];
	struct messip_cnx *cnx = c->cnx;
	bool waited = false, pumped = false;
	int rc, n;

	for (;;) {
		int64_t until, now;

		/* A look the caller has just made (mp_srv_poll) is not
		 * repeated: on a same-host stream the way from the reply
		 * back to the wait is on every round trip's path. */
		rc = polled ? MP_NOTHING : take_any(c, type, sink, result);
		polled = false;
		if (rc != MP_NOTHING) {
			mp_srv_update_wake(c);
			return rc;
		}
		/* The clock only once we waited: a read (25-75 ns here) is a
		 * sizeable share of a same-host message. */
		if (waited && mp_time_now_ns() >= deadline) {
			ack_flush(c);
			mp_srv_update_wake(c);
			return -ETIMEDOUT;
		}
		/* Frames already read from the manager (behind an answer)
		 * would not wake the epoll below: dispatch them first. */
		if (!pumped && mp_link_frame_ready(&cnx->mgr)) {
			pumped = true;
			mp_cnx_pump(cnx);
			continue;
		}
		pumped = false;
		/* About to sleep: acknowledge what was handed out, write
		 * gathered replies, and clear a stale wake flag (or epoll
		 * would not sleep). */
		ack_flush(c);
		if (c->srv.gather)
			gather_flush(c);
		if (c->srv.wake_set)
			mp_srv_update_wake(c);
		until = mp_cnx_wake_time(cnx);
		if (until > deadline)
			until = deadline;
		if (until > c->srv.chore_ns)
			until = c->srv.chore_ns;
		if (c->srv.r2s_pending)
			until = mp_async_wait_bound(c, until);
		if (c->inproc && mp_inproc_idle(c, until)) {
			waited = true; /* in-process work came meanwhile */
			continue;
		}
		if (c->local && mp_local_owns_wait(c, &until)) {
			/* Same-host clients: sleep on the segment's doorbell
			 * (the helper watches the epoll). */
			n = mp_local_wait(c, evs, MP_SRV_EVENTS, until);
		} else {
			n = srv_spin(c, evs, until);
			if (n == 0)
				n = epoll_wait(c->srv.epfd, evs, MP_SRV_EVENTS,
					       mp_time_left_ms(until));
		}
		waited = true;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++)
			handle_event(c, &evs[i]);
		/* One clock read for both, and none when neither is due at
		 * all (FOREVER). */
		until = mp_cnx_wake_time(cnx);
		if (until == MP_TIME_FOREVER &&
		    c->srv.chore_ns == MP_TIME_FOREVER)
			continue;
		now = mp_time_now_ns();
		if (until <= now)
			mp_cnx_pump(cnx);
		if (now >= c->srv.chore_ns)
			srv_chores(c, now);
		/* No mp_srv_update_wake() here: take() runs next, and the
		 * flag is settled when receive returns. */
	}
}

static void slot_release(struct messip_channel_priv *c, int index)
{
	struct mp_srv *s = &c->srv;
	struct mp_item *it = s->slots[index].item;
	struct mp_peer *p = it->peer;

	s->slots[index].item = NULL;
	s->slots[index].canceled = false;
	if (s->slots[index].cancel_tell) {
		/* Replied before receive reported it: nothing to say. */
		s->slots[index].cancel_tell = false;
		s->ncancel_tell--;
	}
	c->pub->receive_allmsg[index] = NULL;
	item_free(it);
	p->refs--;
	p->nreq--;
	if (p->closed) {
		if (p->refs == 0)
			peer_free(c, p);
	} else if (p->paused && p->nreq < MP_PEER_MAX_REQ) {
		peer_unpause(c, p);
	}
}

int mp_srv_reply(struct messip_channel_priv *c, int index, int32_t answer,
		 const struct iovec *iov, int iovcnt, int64_t deadline)
{
	struct mp_srv *s = &c->srv;
	struct mp_wire_msg m;
	struct mp_item *it;
	struct mp_peer *p;
	int64_t total;
	int rc = 0;

	if (index < 0 || index >= s->nslots ||
	    (!s->slots[index].item && !s->slots[index].local &&
	     !s->slots[index].inproc))
		return -EINVAL;
	total = mp_iov_total(iov, iovcnt, MP_MAX_DATA);
	if (total < 0)
		return (int)total;
	if (s->slots[index].inproc)
		return mp_inproc_reply(c, index, answer, iov, iovcnt,
				       (uint32_t)total);
	if (s->slots[index].local)
		return mp_local_reply(c, index, answer, iov, iovcnt,
				      (uint32_t)total);
	it = s->slots[index].item;
	p = it->peer;
	if (s->slots[index].canceled) {
		rc = 0; /* the client gave up: nobody to tell */
	} else if (p->closed ||
		   (mp_time_now_ns() - it->taken_ns > MP_HUP_CHECK_NS &&
		    mp_sock_hung_up(p->link.fd))) {
		/* A write to a socket whose peer is gone still succeeds
		 * locally: without this check a reply to a client that died
		 * while its request was held would report success.  A reply
		 * within a millisecond skips it (a syscall on the fast
		 * path): a client dying then is indistinguishable from one
		 * dying just after its reply arrived. */
		peer_close(c, p, NULL); /* p lives on: refs > 0 */
		rc = -ESRCH;
	} else {
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_REPLY;
		m.reqid = it->reqid;
		m.a = answer;
		m.datalen = (uint32_t)total;
		rc = -EAGAIN;
		if (s->gather && s->gather != p)
			gather_flush(c);
		/* Its next request is next in the queue: gather (up to
		 * 64 KiB); the write comes when receive moves on. */
		if (next_from(s, p) && !p->want_out &&
		    p->link.out_len - p->link.out_off + (size_t)total <
			    MP_GATHER_MAX &&
		    mp_link_queue(&p->link, &m, iov, iovcnt) == 0) {
			s->gather = p;
			rc = 0;
		}
		if (rc == -EAGAIN)
			rc = peer_send(c, p, &m, iov, iovcnt, deadline);
		if (rc == -ETIMEDOUT)
			return rc; /* nothing sent: the index stays */
		if (rc < 0) {
			peer_close(c, p, NULL); /* p lives on: refs > 0 */
			rc = -ESRCH;
		}
	}
	slot_release(c, index);
	mp_srv_update_wake(c);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Setup and teardown.                                                 */

int mp_srv_open(struct messip_channel_priv *c, int lfd, int32_t maxbuf)
{
	struct mp_srv *s = &c->srv;
	struct epoll_event ev = {.events = EPOLLIN};
	int rc;

	s->lfd = lfd;
	s->mgr_fd = -1;
	s->maxbuf = maxbuf;
	s->chore_ns = MP_TIME_FOREVER;
	s->lsrc.kind = MP_SRC_LISTEN;
	s->wsrc.kind = MP_SRC_WAKE;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->epfd < 0 || s->wakefd < 0)
		return -errno;
	ev.data.ptr = &s->lsrc;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, lfd, &ev) < 0)
		return -errno;
	ev.data.ptr = &s->wsrc;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) < 0)
		return -errno;
	rc = slots_grow(c);
	return rc;
}

void mp_srv_close(struct messip_channel_priv *c)
{
	struct mp_srv *s = &c->srv;
	struct mp_item *it;

	if (s->gather)
		gather_flush(c); /* best effort: the replies made count */
	mp_timer_free_all(c);
	while ((it = dequeue(s)) != NULL)
		item_free(it);
	for (int i = 0; i < s->nslots; i++)
		item_free(s->slots[i].item);
	while (s->peers) {
		struct mp_peer *p = s->peers;

		s->peers = p->next;
		mp_link_close(&p->link);
		free(p);
	}
	free(s->slots);
	s->slots = NULL;
	s->nslots = 0;
	free(c->pub->receive_allmsg);
	c->pub->receive_allmsg = NULL;
	if (s->epfd >= 0)
		close(s->epfd); /* also drops the manager fd from it */
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->wakefd >= 0)
		close(s->wakefd);
	s->epfd = s->lfd = s->wakefd = s->mgr_fd = -1;
}

/* ------------------------------------------------------------------ */
/* Public API.                                                         */

static int receive_common(messip_channel_t *ch, int32_t *type,
			  const struct mp_iov_sink *sink, int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	int32_t dummy;
	int result = 0, rc;

	if (!c || !c->server)
		return mp_fail(-EINVAL);
	rc = mp_iov_sink_check(sink);
	if (rc < 0)
		return mp_fail(rc);
	/* Same-host work often waits already: take it before computing the
	 * deadline costs a clock read (a sizeable share of such a message). */
	rc = c->local || c->inproc
		     ? mp_srv_poll(c, type ? type : &dummy, sink, &result)
		     : MP_NOTHING;
	if (rc == MP_NOTHING)
		rc = mp_srv_receive(c, type ? type : &dummy, sink,
				    mp_time_deadline(msec_timeout),
				    c->local || c->inproc, &result);
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	return rc < 0 ? mp_fail(rc) : result;
}

MESSIP_EXPORT int messip_receive(messip_channel_t *ch, int32_t *type,
				 void *buffer, int maxlen, int msec_timeout)
{
	struct mp_iov_sink sink = mp_iov_sink_buf(buffer, maxlen);

	return receive_common(ch, type, &sink, msec_timeout);
}

MESSIP_EXPORT int messip_receivev(messip_channel_t *ch, int32_t *type,
				  const struct iovec *iov, int iovcnt,
				  int msec_timeout)
{
	static const struct iovec none;
	struct mp_iov_sink sink = {NULL, 0, iovcnt ? iov : &none, iovcnt};

	if (iovcnt && !iov)
		return mp_fail(-EINVAL);
	return receive_common(ch, type, &sink, msec_timeout);
}

static int reply_common(messip_channel_t *ch, int index, int32_t answer,
			const struct iovec *iov, int iovcnt, int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	int rc;

	if (!c || !c->server)
		return mp_fail(-EINVAL);
	/* A same-host or in-process reply never waits: no deadline (no
	 * clock read). */
	rc = mp_srv_reply(c, index, answer, iov, iovcnt,
			  index >= 0 && index < c->srv.nslots &&
					  (c->srv.slots[index].local ||
					   c->srv.slots[index].inproc)
				  ? MP_TIME_FOREVER
				  : mp_time_deadline(msec_timeout));
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	return rc < 0 ? mp_fail(rc) : 0;
}

MESSIP_EXPORT int messip_reply(messip_channel_t *ch, int index, int32_t answer,
			       const void *reply_buffer, int reply_len,
			       int msec_timeout)
{
	struct iovec v = {(void *)reply_buffer, (size_t)reply_len};

	if (reply_len < 0 || (reply_len > 0 && !reply_buffer))
		return mp_fail(-EINVAL);
	if (reply_len > MP_MAX_DATA)
		return mp_fail(-EMSGSIZE);
	return reply_common(ch, index, answer, &v, reply_len ? 1 : 0,
			    msec_timeout);
}

MESSIP_EXPORT int messip_replyv(messip_channel_t *ch, int index, int32_t answer,
				const struct iovec *iov, int iovcnt,
				int msec_timeout)
{
	return reply_common(ch, index, answer, iov, iovcnt, msec_timeout);
}

MESSIP_EXPORT int messip_channel_option(messip_channel_t *ch, int option,
					int value)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	int old;

	if (!c || (value != 0 && value != 1))
		return mp_fail(-EINVAL);
	if (option == MESSIP_OPT_GATHER && !c->server) {
		old = c->cli.gather;
		c->cli.gather = value;
		return old;
	}
	if (!c->server || option != MESSIP_OPT_CANCELED)
		return mp_fail(-EINVAL);
	old = c->srv.opt_canceled;
	c->srv.opt_canceled = value;
	if (!value) {
		/* Opted out: withdrawals not yet reported stay unsaid. */
		for (int i = 0; i < c->srv.nslots; i++)
			c->srv.slots[i].cancel_tell = false;
		c->srv.ncancel_tell = 0;
	}
	return old;
}

MESSIP_EXPORT int messip_channel_fd(messip_channel_t *ch)
{
	struct messip_channel_priv *c = mp_chan_get(ch);

	if (!c || !c->server)
		return mp_fail(-EINVAL);
	c->srv.fd_exported = true;
	if (c->local)
		mp_local_fd_mode(c);
	if (c->inproc)
		mp_inproc_fd_mode(c);
	mp_srv_update_wake(c);
	return c->srv.epfd;
}
