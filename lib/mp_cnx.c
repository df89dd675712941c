/*
 * mp_cnx — the manager connection: registration, requests, dispatch of
 * pushed frames, and resume (see mp_cnx.h).
 *
 * Invariants:
 *   - state UP, CONNECTING and HELLO own a link fd; DOWN and DEAD have
 *     none (mgr.fd == -1);
 *   - every server channel's epoll holds exactly the current link fd (with
 *     EPOLLOUT while CONNECTING, EPOLLIN otherwise), or nothing: the fd is
 *     removed from every epoll before it is closed, so a descriptor shared
 *     with a forked child can never leave a stale registration behind;
 *   - a frame is dispatched at most once, in arrival order; an answer is
 *     matched by (operation kind, reqid) and answers nobody waits for are
 *     dropped, which is what makes a timed-out request harmless;
 *   - a channel's handle is valid for registration reg_of; after a new
 *     registration the channels are declared again (reregister()).
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "messip.h"
#include "mp_auth.h"
#include "mp_prove.h"
#include "mp_alloc.h"
#include "mp_chan.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_host.h"
#include "mp_log.h"
#include "mp_srv.h"
#include "mp_time.h"

#define BACKOFF_MIN_MS	 50
#define BACKOFF_MAX_MS	 1000
#define ATTEMPT_MS	 1000 /* one resume attempt, connect + HELLO */
#define REREG_MS	 2000 /* re-declaring channels after ESTALE */
#define PUMP_READS	 16   /* reads per pump: bounded, then yield */
#define CONF_FILE	 "/etc/messip"
#define SECRET_FILE	 "/etc/messip-secret"
#define MP_CNX_MAX_ADDRS 8 /* addresses of the manager tried */

/* Pipelined buffered sends (see "Pipelined buffered sends" below). */
#define PIPE_MAX_FRAMES	 1024	      /* unanswered BSENDs at most */
#define PIPE_MAX_BYTES	 (512 * 1024) /* their encoded bytes at most */
#define PIPE_FLUSH_BYTES 16384      /* write once this much is waiting */
#define PIPE_LONE_NS	 200000	      /* a send after this long is lone */
#define PIPE_HOLD_NS	 150000	      /* oldest unwritten frame's limit */

static void pipe_drop(struct messip_cnx *cnx, const char *why);
static int dispatch(struct messip_cnx *cnx, const struct mp_wire_msg *m);

static int64_t ms_ns(int64_t ms)
{
	return ms * 1000000;
}

static int64_t add_sat(int64_t t, int64_t d)
{
	if (t == MP_TIME_FOREVER || d >= MP_TIME_FOREVER - t)
		return MP_TIME_FOREVER;
	return t + d;
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

struct messip_cnx *mp_cnx_get(messip_cnx_t *cnx)
{
	return (cnx && cnx->magic == MP_CNX_MAGIC) ? cnx : NULL;
}

uint32_t mp_cnx_reqid(struct messip_cnx *cnx)
{
	if (++cnx->reqid == 0)
		cnx->reqid = 1;
	return cnx->reqid;
}

int32_t mp_cnx_wait_field(int64_t deadline)
{
	return deadline == MP_TIME_FOREVER ? -1 : mp_time_left_ms(deadline);
}

/* Frames read behind an answer stay in the link's buffer, where the
 * socket no longer reports them: make every server's wait see them
 * (its receive dispatches them). */
static void wake_servers(struct messip_cnx *cnx)
{
	if (!mp_link_frame_ready(&cnx->mgr))
		return;
	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
		if (c->server)
			mp_srv_update_wake(c);
}

void mp_cnx_add_chan(struct messip_cnx *cnx, struct messip_channel_priv *c)
{
	c->next = cnx->chans;
	cnx->chans = c;
	if (c->server && cnx->mgr.fd >= 0)
		mp_srv_watch_mgr(c, cnx->mgr.fd,
				 cnx->state == MP_CNX_CONNECTING ? EPOLLOUT
								 : EPOLLIN);
	if (c->server)
		mp_srv_update_wake(c); /* records behind the CH_CREATE answer */
}

void mp_cnx_remove_chan(struct messip_cnx *cnx, struct messip_channel_priv *c)
{
	for (struct messip_channel_priv **pp = &cnx->chans; *pp;
	     pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			c->next = NULL;
			return;
		}
	}
}

int mp_cnx_fd(const struct messip_cnx *cnx)
{
	return cnx->mgr.fd;
}

short mp_cnx_poll_events(const struct messip_cnx *cnx)
{
	return cnx->state == MP_CNX_CONNECTING ? POLLOUT : POLLIN;
}

int64_t mp_cnx_wake_time(const struct messip_cnx *cnx)
{
	switch (cnx->state) {
	case MP_CNX_DOWN:
		return min64(cnx->next_try,
			     cnx->down_since + ms_ns(MP_RESUME_GRACE_MS));
	case MP_CNX_CONNECTING:
	case MP_CNX_HELLO:
		return cnx->try_end;
	default:
		return MP_TIME_FOREVER;
	}
}

/* Point every server channel's epoll at the current link fd. */
static void sync_watch(struct messip_cnx *cnx)
{
	uint32_t ev = cnx->state == MP_CNX_CONNECTING ? EPOLLOUT : EPOLLIN;

	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
		if (c->server)
			mp_srv_watch_mgr(c, cnx->mgr.fd, ev);
}

static void close_link(struct messip_cnx *cnx)
{
	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
		if (c->server)
			mp_srv_watch_mgr(c, -1, 0);
	/* Disarmed under the lock: the flusher no longer writes to this
	 * link, nor to the next one until a send arms it again. */
	pthread_mutex_lock(&cnx->pipe.lock);
	__atomic_store_n(&cnx->pipe.armed, 0, __ATOMIC_RELAXED);
	mp_link_close(&cnx->mgr);
	pthread_mutex_unlock(&cnx->pipe.lock);
}

/* DOWN (or still DOWN) past the grace period: give up. */
static bool check_grace(struct messip_cnx *cnx, int64_t now)
{
	if (cnx->state == MP_CNX_UP || cnx->state == MP_CNX_DEAD)
		return cnx->state == MP_CNX_DEAD;
	if (now - cnx->down_since < ms_ns(MP_RESUME_GRACE_MS))
		return false;
	close_link(cnx);
	cnx->state = MP_CNX_DEAD;
	pipe_drop(cnx, "manager unreachable");
	mp_log(MESSIP_LOG_ERROR, "MESSIP-MGR-GONE",
	       "manager %s unreachable for %d ms, registration %d lost",
	       cnx->where, MP_RESUME_GRACE_MS, (int)cnx->regno);
	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
		if (c->server)
			mp_srv_update_wake(c); /* receive reports ESHUTDOWN */
	return true;
}

/* The link broke (UP) or a resume attempt failed (CONNECTING/HELLO). */
static void link_lost(struct messip_cnx *cnx, const char *why)
{
	int64_t now = mp_time_now_ns();

	close_link(cnx);
	if (cnx->state == MP_CNX_UP) {
		mp_log(MESSIP_LOG_WARNING, "MESSIP-MGR-LOST",
		       "link to manager %s lost (%s), resuming registration %d",
		       cnx->where, why, (int)cnx->regno);
		cnx->down_since = now;
		cnx->backoff_ms = BACKOFF_MIN_MS;
		cnx->next_try = now;
	} else {
		mp_log(MESSIP_LOG_DEBUG, "MESSIP-MGR-RETRY",
		       "resume attempt to %s failed (%s)", cnx->where, why);
		cnx->next_try = now + ms_ns(cnx->backoff_ms);
		cnx->backoff_ms = cnx->backoff_ms * 2 > BACKOFF_MAX_MS
					  ? BACKOFF_MAX_MS
					  : cnx->backoff_ms * 2;
	}
	cnx->state = MP_CNX_DOWN;
	check_grace(cnx, now);
}

static void hello_msg(struct messip_cnx *cnx, struct mp_wire_msg *m,
		      bool resume)
{
	memset(m, 0, sizeof(*m));
	m->op = MP_OP_HELLO;
	m->reqid = cnx->hello_reqid = mp_cnx_reqid(cnx);
	memcpy(m->id, cnx->id, sizeof(cnx->id));
	m->a = (int32_t)getpid();
	m->u = resume ? cnx->token : 0;
	/* Our host token tells the manager whether our pid means anything
	 * to it (doc/protocol.md, "Registration"). */
	if (!cnx->my_host && mp_host_token(&cnx->my_host) < 0)
		cnx->my_host = 0;
	if (cnx->my_host)
		snprintf(m->name, sizeof(m->name), "%llu",
			 (unsigned long long)cnx->my_host);
}

/* A positive errno from the peer, checked: anything else is EPROTO. */
static int peer_status(int32_t a)
{
	return (a > 0 && a < 4096) ? -a : -EPROTO;
}

/*
 * A frame of the authentication exchange on a fresh manager link
 * (doc/protocol.md, "Authentication"; the exchange itself is mp_prove's,
 * shared with the direct links): once the manager proved the secret too,
 * the HELLO goes again.  Returns 1 (handled: wait for the next frame), 0
 * (not an authentication frame), or -EACCES (refused by the manager, we
 * have no secret, or its proof is wrong), -EPROTO, or a send error.
 */
static int auth_step(struct messip_cnx *cnx, const struct mp_wire_msg *m,
		     int64_t deadline)
{
	struct mp_wire_msg r;
	char who[sizeof(cnx->where) + 16];
	int rc;

	if (m->op == MP_OP_CHALLENGE && !cnx->key.len) {
		mp_log(MESSIP_LOG_ERROR, "MESSIP-AUTH",
		       "manager %s requires a secret and none is "
		       "set (MESSIP_SECRET_FILE or %s)",
		       cnx->where, SECRET_FILE);
		return -EACCES;
	}
	snprintf(who, sizeof(who), "manager %s", cnx->where);
	rc = mp_prove_step(&cnx->auth, &cnx->key, &cnx->mgr, m,
			   cnx->hello_reqid,
			   m->op == MP_OP_CHALLENGE ? mp_cnx_reqid(cnx) : 0,
			   deadline, who);
	if (rc <= 0 || cnx->auth.stage != MP_PROVE_DONE)
		return rc;
	hello_msg(cnx, &r, cnx->token != 0);
	rc = mp_link_send_msg(&cnx->mgr, &r, deadline);
	return rc < 0 ? rc : 1;
}

/* A WELCOME is acceptable only from a manager that proved the secret,
 * when we have one: a manager (or an impostor) that skips the exchange
 * is refused. */
static int welcome_allowed(const struct messip_cnx *cnx)
{
	if (cnx->key.len && cnx->auth.stage != MP_PROVE_DONE) {
		mp_log(MESSIP_LOG_ERROR, "MESSIP-AUTH",
		       "manager %s did not authenticate itself, but a secret "
		       "is set",
		       cnx->where);
		return -EACCES;
	}
	return 0;
}

/* Load the secret: $MESSIP_SECRET_FILE, else SECRET_FILE when it exists
 * and is ours to read.  A named file that fails any check is an error
 * (EACCES, logged with the reason). */
static int load_secret(struct messip_cnx *cnx)
{
	const char *path = getenv("MESSIP_SECRET_FILE");
	bool dflt = !path || !*path;
	char err[512];
	int rc;

	if (dflt)
		path = SECRET_FILE;
	rc = mp_auth_key_load(path, &cnx->key, err, sizeof(err));
	if (rc == 0 || (dflt && (rc == -ENOENT || rc == -EACCES)))
		return 0;
	mp_log(MESSIP_LOG_ERROR, "MESSIP-SECRET", "%s", err);
	return -EACCES;
}

static void take_welcome(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	cnx->regno = m->b;
	cnx->token = m->u;
	cnx->host_token = strtoull(m->addr, NULL, 10);
}

/* ------------------------------------------------------------------ */
/* Pipelined buffered sends.                                           */
/*
 * A BSEND within the pipeline's limits is encoded into cnx->pipe and the
 * call returns at once; the frame stays there until its RESULT (or a
 * later one: the manager answers in order and may answer a run of
 * pipelined BSENDs with one RESULT, for the last) says it is in the ring.
 * The frames carry c = -1 (wait forever): the manager parks them while
 * the ring is full and never drops one, so a frame sent is a message
 * queued, and a message the library still holds is sent again, with its
 * reqid, after a resume (the manager drops those it queued already).  The
 * limits (PIPE_MAX_FRAMES, PIPE_MAX_BYTES) are what makes a sender wait
 * for a full ring: past them a send waits for answers, up to its
 * deadline, and then fails with ETIMEDOUT without sending anything.
 *
 * Only a stream is pipelined: a send that comes PIPE_LONE_NS or more
 * after the previous one of this connection is lone, and waits for its
 * RESULT as before (mp_cnx_rpc): it costs one round trip, which a lone
 * message can afford, and it learns at once of a broken link.
 *
 * Coalescing: frames are written in batches, by the send that finds
 * PIPE_FLUSH_BYTES waiting or the oldest unwritten frame older than
 * PIPE_HOLD_NS, by every other library call on the connection before it
 * waits (mp_cnx_pump, mp_cnx_rpc, pipe_wait), and otherwise by the
 * flusher thread (below) PIPE_HOLD_NS after the first unwritten frame:
 * the tail of a burst never waits longer than that, whatever the program
 * does next.
 */

/* ---- The flusher ----------------------------------------------------
 *
 * One library thread, started by the first send that leaves frames
 * unwritten, for every connection of the process.  A connection is
 * "armed" (pipe.armed) by its user, under pipe.lock, when it leaves
 * frames unwritten on a link that is up; the flusher then writes them
 * PIPE_HOLD_NS later unless the user did first, and disarms it.  The
 * user takes pipe.lock around every write to the manager link, and
 * close_link disarms under it, so the two never write at once and the
 * flusher never writes on a link being replaced.  The flusher only
 * tries the lock: a user holding it is writing to that very socket.
 *
 * fl_mu guards the list of connections and the thread's state; lock
 * order fl_mu, then pipe.lock.  fork: the child has no flusher (it is
 * started again lazily there) and a fresh fl_mu (pthread_atfork).
 */
static pthread_mutex_t fl_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fl_cv;
static pthread_once_t fl_once = PTHREAD_ONCE_INIT;
static struct messip_cnx *fl_list;
static bool fl_running;

static void fl_prepare(void)
{
	pthread_mutex_lock(&fl_mu);
}

static void fl_parent(void)
{
	pthread_mutex_unlock(&fl_mu);
}

static void fl_cv_init(void)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&fl_cv, &a);
	pthread_condattr_destroy(&a);
}

/* The child has no flusher, and the parent's one may have been waiting
 * on fl_cv: a fresh condition variable, an empty list (the parent's
 * connections are not the child's to write to: their frames must never
 * go out twice), and a flusher started again when needed. */
static void fl_child(void)
{
	for (struct messip_cnx *c = fl_list, *n; c; c = n) {
		n = c->pipe.fnext;
		c->pipe.fnext = NULL;
		c->pipe.listed = false;
		c->pipe.armed = 0;
		pthread_mutex_init(&c->pipe.lock, NULL);
	}
	fl_list = NULL;
	fl_cv_init();
	fl_running = false;
	pthread_mutex_init(&fl_mu, NULL);
}

/* exit(): the flusher dies with the process, so write what it would
 * have (waiting up to 100 ms a connection).  A connection busy in
 * another thread is skipped; _exit() and signals skip all of this: a
 * process killed within PIPE_HOLD_NS of a pipelined send may lose it. */
static void fl_atexit(void)
{
	pthread_mutex_lock(&fl_mu);
	for (struct messip_cnx *c = fl_list; c; c = c->pipe.fnext) {
		struct mp_pipe *p = &c->pipe;

		if (!__atomic_load_n(&p->armed, __ATOMIC_ACQUIRE) ||
		    pthread_mutex_trylock(&p->lock) != 0)
			continue;
		if (p->armed && p->wr < p->len &&
		    mp_link_send_raw(&c->mgr, p->buf + p->wr, p->len - p->wr,
				     mp_time_now_ns() + ms_ns(100)) == 0)
			p->wr = p->len;
		p->armed = 0;
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_unlock(&fl_mu);
}

static void fl_setup(void)
{
	fl_cv_init();
	pthread_atfork(fl_prepare, fl_parent, fl_child);
	atexit(fl_atexit);
}

/* Under pipe.lock, armed: write the unwritten frames without waiting.
 * A full socket keeps it armed, to be tried again a bound later; a
 * broken link is the user's to find (its next read or write). */
static void fl_write(struct messip_cnx *cnx, int64_t now)
{
	struct mp_pipe *p = &cnx->pipe;
	int rc = 0;

	if (p->wr < p->len)
		rc = mp_link_send_raw(&cnx->mgr, p->buf + p->wr,
				      p->len - p->wr, now);
	if (rc == -ETIMEDOUT) {
		__atomic_store_n(&p->armed_ns, now, __ATOMIC_RELAXED);
		return;
	}
	if (rc == 0)
		p->wr = p->len;
	__atomic_store_n(&p->armed, 0, __ATOMIC_RELAXED);
}

static void *fl_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&fl_mu);
	for (;;) {
		int64_t now = mp_time_now_ns(), next = INT64_MAX;
		struct timespec ts;

		for (struct messip_cnx *c = fl_list; c; c = c->pipe.fnext) {
			struct mp_pipe *p = &c->pipe;

			int64_t since;

			/* The acquire pairs with the user's release of
			 * armed: armed_ns is read after it.  Read without
			 * p->lock, so atomic: the user may disarm and arm
			 * again meanwhile; a stale (older) value only makes
			 * this flush early, under the lock. */
			if (!__atomic_load_n(&p->armed, __ATOMIC_ACQUIRE))
				continue;
			since = __atomic_load_n(&p->armed_ns, __ATOMIC_RELAXED);
			if (now - since < PIPE_HOLD_NS) {
				if (since + PIPE_HOLD_NS < next)
					next = since + PIPE_HOLD_NS;
				continue;
			}
			if (pthread_mutex_trylock(&p->lock) == 0) {
				if (p->armed)
					fl_write(c, now);
				if (p->armed)
					next = now + PIPE_HOLD_NS;
				pthread_mutex_unlock(&p->lock);
			} else {
				next = now + PIPE_HOLD_NS / 4;
			}
		}
		if (next == INT64_MAX) {
			pthread_cond_wait(&fl_cv, &fl_mu);
			continue;
		}
		ts.tv_sec = next / 1000000000;
		ts.tv_nsec = next % 1000000000;
		pthread_cond_timedwait(&fl_cv, &fl_mu, &ts);
	}
	return NULL;
}

/* The user armed cnx: make sure the flusher runs and knows.  Without a
 * thread (pthread_create failed), the frames wait for the next call. */
static void fl_kick(struct messip_cnx *cnx)
{
	pthread_once(&fl_once, fl_setup);
	pthread_mutex_lock(&fl_mu);
	if (!cnx->pipe.listed) {
		cnx->pipe.fnext = fl_list;
		fl_list = cnx;
		cnx->pipe.listed = true;
	}
	if (!fl_running) {
		pthread_attr_t a;
		pthread_t t;
		sigset_t all, old;

		/* The thread takes no signal of the program's. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&a, 64 * 1024);
		fl_running = pthread_create(&t, &a, fl_main, NULL) == 0;
		pthread_attr_destroy(&a);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	pthread_cond_signal(&fl_cv);
	pthread_mutex_unlock(&fl_mu);
}

/* cnx goes away: off the list, after which the flusher never touches
 * it (it only does under fl_mu). */
static void fl_forget(struct messip_cnx *cnx)
{
	if (!cnx->pipe.listed)
		return;
	pthread_mutex_lock(&fl_mu);
	for (struct messip_cnx **pp = &fl_list; *pp; pp = &(*pp)->pipe.fnext)
		if (*pp == cnx) {
			*pp = cnx->pipe.fnext;
			break;
		}
	cnx->pipe.listed = false;
	pthread_mutex_unlock(&fl_mu);
}

static bool pipe_has_unwritten(const struct mp_pipe *p)
{
	return p->wr < p->len;
}

/* pipe_write under pipe.lock: on success the flusher has nothing left
 * to do and is disarmed. */
static int pipe_write_locked(struct messip_cnx *cnx)
{
	struct mp_pipe *p = &cnx->pipe;
	int rc;

	if (!pipe_has_unwritten(p) || cnx->state != MP_CNX_UP || cnx->rereg ||
	    cnx->in_rereg)
		return 0;
	rc = mp_link_send_raw(&cnx->mgr, p->buf + p->wr, p->len - p->wr,
			      mp_time_now_ns());
	if (rc == -ETIMEDOUT)
		return -EAGAIN;
	if (rc < 0)
		return rc;
	p->wr = p->len;
	__atomic_store_n(&p->armed, 0, __ATOMIC_RELAXED);
	return 0;
}

/* Hand the unwritten frames to the link without waiting (a part the
 * socket cannot take now is kept by the link and goes first later).
 * 0, -EAGAIN (the socket took nothing), -EPIPE. */
static int pipe_write(struct messip_cnx *cnx)
{
	int rc;

	pthread_mutex_lock(&cnx->pipe.lock);
	rc = pipe_write_locked(cnx);
	pthread_mutex_unlock(&cnx->pipe.lock);
	return rc;
}

/* Forget every held frame (the registration they belonged to is gone). */
static void pipe_drop(struct messip_cnx *cnx, const char *why)
{
	struct mp_pipe *p = &cnx->pipe;

	if (p->nfr)
		mp_log(MESSIP_LOG_ERROR, "MESSIP-BSEND-LOST",
		       "%u buffered messages not confirmed by manager %s "
		       "dropped: %s",
		       p->nfr, cnx->where, why);
	p->off = p->wr = p->len = 0;
	p->fhead = p->nfr = 0;
	p->queued = -1;
}

/* RESULT m answers a pipelined BSEND: it and every older one are done.
 * Returns false when m's reqid is not one of the pipeline's. */
static bool pipe_answer(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	struct mp_pipe *p = &cnx->pipe;
	uint32_t first, last;
	unsigned n = 0;

	if (!p->nfr || m->op != MP_OP_RESULT)
		return false;
	first = p->fr[p->fhead].reqid;
	last = p->fr[(p->fhead + p->nfr - 1) % PIPE_MAX_FRAMES].reqid;
	/* Serial comparison: reqids wrap. */
	if ((int32_t)(m->reqid - first) < 0 || (int32_t)(m->reqid - last) > 0)
		return false;
	pthread_mutex_lock(&p->lock);
	while (n < p->nfr &&
	       (int32_t)(p->fr[(p->fhead + n) % PIPE_MAX_FRAMES].reqid -
			 m->reqid) <= 0)
		n++;
	p->off = p->fr[(p->fhead + n - 1) % PIPE_MAX_FRAMES].end;
	if (p->wr < p->off)
		p->wr = p->off; /* cannot be: answered before written */
	p->fhead = (p->fhead + n) % PIPE_MAX_FRAMES;
	p->nfr -= n;
	if (!p->nfr)
		p->off = p->wr = p->len = 0;
	pthread_mutex_unlock(&p->lock);
	if (m->c > 0)
		p->mgr_max = (uint32_t)m->c;
	p->room = m->a == 0 && m->u < UINT32_MAX ? (uint32_t)m->u : 0;
	if (m->a == 0) {
		p->queued = m->b < 0 ? 0 : m->b;
	} else {
		/* Only a channel that vanished (ESRCH) or a refusal the
		 * checks before sending cannot foresee gets here. */
		mp_log(m->a == ESRCH ? MESSIP_LOG_INFO : MESSIP_LOG_ERROR,
		       "MESSIP-BSEND-REFUSED",
		       "buffered message (request %u) refused by manager "
		       "%s: %s",
		       m->reqid, cnx->where, strerror(-peer_status(m->a)));
		p->queued = -1;
	}
	return true;
}

/* Make room for n more bytes at the end of buf.  0 or -ENOMEM. */
static int pipe_room(struct mp_pipe *p, size_t n)
{
	uint8_t *b;
	size_t cap;

	if (p->off && (p->off == p->len || p->cap - p->len < n)) {
		/* Slide the held frames to the front. */
		memmove(p->buf, p->buf + p->off, p->len - p->off);
		for (unsigned i = 0; i < p->nfr; i++)
			p->fr[(p->fhead + i) % PIPE_MAX_FRAMES].end -=
				(uint32_t)p->off;
		p->len -= p->off;
		p->wr -= p->off;
		p->off = 0;
	}
	if (!p->fr) {
		p->fr = mp_calloc(PIPE_MAX_FRAMES, sizeof(*p->fr));
		if (!p->fr)
			return -ENOMEM;
	}
	if (p->cap - p->len >= n)
		return 0;
	cap = p->cap ? p->cap : 64 * 1024;
	while (cap - p->len < n)
		cap *= 2;
	b = mp_realloc(p->buf, cap);
	if (!b)
		return -ENOMEM;
	p->buf = b;
	p->cap = cap;
	return 0;
}

/* No room in the pipeline for one more frame of len bytes: out of
 * credit (the ring's room at the last answer, minus what was sent
 * since) or past the pipeline's limits. */
static bool pipe_blocked(const struct mp_pipe *p, uint32_t len)
{
	return p->nfr >= PIPE_MAX_FRAMES || p->nfr >= p->room ||
	       p->len - p->off + len + 64 > PIPE_MAX_BYTES;
}

/* One non-blocking read of the manager link: > 0 bytes, 0 nothing,
 * -EPIPE (the link is lost: closed here). */
static int mgr_fill(struct messip_cnx *cnx)
{
	int rc = mp_link_fill(&cnx->mgr);

	if (rc < 0) {
		link_lost(cnx, rc == -EPIPE ? "closed" : "read error");
		return -EPIPE;
	}
	return rc;
}

/* Wait until the manager link is readable: 0, -ETIMEDOUT, -EPIPE (the
 * link is lost: closed here). */
static int mgr_wait_input(struct messip_cnx *cnx, int64_t deadline)
{
	int rc = mp_sock_wait(cnx->mgr.fd, POLLIN, deadline);

	if (rc == 0)
		return -ETIMEDOUT;
	if (rc < 0) {
		link_lost(cnx, "poll error");
		return -EPIPE;
	}
	return 0;
}

/* Wait for input from the manager (answers to pipelined BSENDs among
 * it) and handle what came: 0, -ETIMEDOUT (nothing by the deadline),
 * -EPIPE (the link was lost). */
static int pipe_wait(struct messip_cnx *cnx, int64_t deadline)
{
	struct mp_wire_msg m;
	int rc;

	if (pipe_write(cnx) == -EPIPE) {
		link_lost(cnx, "write error");
		return -EPIPE;
	}
	for (;;) {
		bool got = false;

		while ((rc = mp_link_next(&cnx->mgr, &m)) > 0) {
			got = true;
			if (dispatch(cnx, &m) < 0) {
				link_lost(cnx, "write error");
				return -EPIPE;
			}
		}
		if (rc < 0) {
			link_lost(cnx, "protocol error");
			return -EPIPE;
		}
		if (got) {
			wake_servers(cnx);
			return 0;
		}
		rc = mgr_fill(cnx);
		if (rc == 0)
			rc = mgr_wait_input(cnx, deadline);
		if (rc < 0)
			return rc;
	}
}

/* One step of waiting for the pipeline: answers, or the link back (whose
 * resume sends the held frames again).  0, -ETIMEDOUT, -ESHUTDOWN. */
static int pipe_wait_step(struct messip_cnx *cnx, int64_t deadline)
{
	int rc = cnx->state == MP_CNX_UP ? pipe_wait(cnx, deadline)
					 : mp_cnx_wait_up(cnx, deadline);

	return rc == -EPIPE ? 0 : rc;
}

int mp_cnx_pipe_drain(struct messip_cnx *cnx, int64_t deadline)
{
	while (cnx->pipe.nfr) {
		int rc = pipe_wait_step(cnx, deadline);

		if (rc < 0)
			return rc;
	}
	return 0;
}

bool mp_cnx_can_pipe(const struct messip_cnx *cnx, uint32_t len)
{
	return cnx->state == MP_CNX_UP && !cnx->rereg && !cnx->in_rereg &&
	       len < cnx->pipe.mgr_max &&
	       mp_time_now_ns() - cnx->pipe.last_ns < PIPE_LONE_NS;
}

void mp_cnx_bsend_answered(struct messip_cnx *cnx,
			   const struct mp_wire_msg *ans)
{
	if (ans->c > 0)
		cnx->pipe.mgr_max = (uint32_t)ans->c;
	cnx->pipe.room =
		ans->a == 0 && ans->u < UINT32_MAX ? (uint32_t)ans->u : 0;
	cnx->pipe.last_ns = mp_time_now_ns();
	if (ans->a == 0 && !cnx->pipe.nfr)
		cnx->pipe.queued = ans->b < 0 ? 0 : ans->b;
}

int mp_cnx_bsend(struct messip_cnx *cnx, int32_t handle, int32_t type,
		 const void *data, uint32_t len, int64_t deadline)
{
	struct mp_pipe *p = &cnx->pipe;
	struct mp_wire_msg m;
	int64_t now;
	int32_t before;
	size_t need;
	bool kick;
	int hl, rc;

	/* Out of credit or past the pipeline's limits: wait for answers,
	 * which renew the credit, up to the deadline (then ETIMEDOUT, and
	 * nothing of this call was sent).  With nothing unanswered, the
	 * caller sends a waiting BSEND instead, which the manager parks
	 * while the ring is full, up to the deadline: it must not wait
	 * behind pipelined frames parked there, whose wait has no end. */
	while (pipe_blocked(p, len)) {
		if (!p->nfr)
			return -EAGAIN;
		rc = pipe_wait_step(cnx, deadline);
		if (rc < 0)
			return rc;
		if (cnx->state == MP_CNX_UP && (cnx->rereg || cnx->in_rereg))
			return -EAGAIN;
	}
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_BSEND;
	m.flags = MP_WIRE_F_PIPE;
	m.reqid = mp_cnx_reqid(cnx);
	m.b = handle;
	m.a = type;
	m.c = -1;
	m.datalen = len;
	need = MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + len;
	pthread_mutex_lock(&p->lock);
	rc = pipe_room(p, need);
	hl = rc < 0 ? rc
		    : mp_wire_encode_head(&m, p->buf + p->len, p->cap - p->len);
	if (hl < 0) {
		pthread_mutex_unlock(&p->lock);
		return hl;
	}
	if (len)
		memcpy(p->buf + p->len + hl, data, len);
	now = mp_time_now_ns();
	if (!pipe_has_unwritten(p))
		p->unwritten_ns = now;
	p->len += (size_t)hl + len;
	p->fr[(p->fhead + p->nfr) % PIPE_MAX_FRAMES].reqid = m.reqid;
	p->fr[(p->fhead + p->nfr) % PIPE_MAX_FRAMES].end = (uint32_t)p->len;
	/* What the library knows: the count the last answer gave, that
	 * message itself, and every one sent since (an upper bound: the
	 * server may have taken some meanwhile). */
	before = p->queued < 0 ? (int32_t)p->nfr
			       : p->queued + 1 + (int32_t)p->nfr;
	p->nfr++;
	kick = false;
	rc = 0;
	if (p->len - p->wr >= PIPE_FLUSH_BYTES ||
	    now - p->unwritten_ns >= PIPE_HOLD_NS)
		rc = pipe_write_locked(cnx);
	if (pipe_has_unwritten(p) && cnx->state == MP_CNX_UP && !cnx->rereg &&
	    !cnx->in_rereg && !p->armed) {
		/* The release publishes armed_ns to the flusher. */
		__atomic_store_n(&p->armed_ns, p->unwritten_ns,
				 __ATOMIC_RELAXED);
		__atomic_store_n(&p->armed, 1, __ATOMIC_RELEASE);
		kick = true;
	}
	pthread_mutex_unlock(&p->lock);
	if (kick)
		fl_kick(cnx);
	if (rc == -EPIPE)
		link_lost(cnx, "write error"); /* re-sent on resume */
	p->last_ns = now;
	if (cnx->state != MP_CNX_UP) {
		/* The link broke under the write: resume now, as a waiting
		 * send would, so that the message goes out within this call
		 * when the manager is back in time (resumed() and
		 * reregister() write the held frames).  Past the deadline it
		 * stays held and goes with the next resume. */
		rc = mp_cnx_wait_up(cnx, deadline);
		if (rc == -ESHUTDOWN)
			return rc;
	}
	return before;
}

int mp_cnx_flush(struct messip_cnx *cnx)
{
	int rc;

	/* Only the user arms, so a relaxed read of its own store: not
	 * armed, nothing could be written now. */
	if (!__atomic_load_n(&cnx->pipe.armed, __ATOMIC_RELAXED))
		return 0;
	rc = pipe_write(cnx);

	if (rc == -EPIPE) {
		link_lost(cnx, "write error");
		return 0;
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* Frames the manager pushes.                                          */

static struct messip_channel_priv *find_server(struct messip_cnx *cnx,
					       int32_t handle)
{
	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
		if (c->server && c->handle == handle && c->srv.lfd >= 0)
			return c;
	return NULL;
}

static bool is_answer(unsigned op)
{
	return op == MP_OP_RESULT || op == MP_OP_CH_INFO ||
	       op == MP_OP_WELCOME || op == MP_OP_PONG;
}

/* A late answer to a request that timed out: if it succeeded, undo it,
 * so that a timeout leaves nothing behind (no name nobody serves, no
 * client link nobody will disconnect). */
static void late_answer(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	unsigned n = cnx->nundo < 8 ? cnx->nundo : 8;
	struct mp_wire_msg u;

	for (unsigned i = 0; i < n; i++) {
		if (cnx->undo[i].reqid != m->reqid || !cnx->undo[i].op)
			continue;
		memset(&u, 0, sizeof(u));
		if (cnx->undo[i].op == MP_OP_CH_CREATE &&
		    m->op == MP_OP_RESULT && m->a == 0) {
			u.op = MP_OP_CH_DELETE;
			strcpy(u.name, cnx->undo[i].name);
		} else if (cnx->undo[i].op == MP_OP_CH_CONNECT &&
			   m->op == MP_OP_CH_INFO && m->a == 0) {
			u.op = MP_OP_CH_DISCONNECT;
			u.b = m->b;
		}
		cnx->undo[i].op = 0;
		if (u.op) {
			u.reqid = mp_cnx_reqid(cnx); /* its answer: late too */
			mp_cnx_post(cnx, &u);
			mp_log(MESSIP_LOG_DEBUG, "MESSIP-LATE-UNDO",
			       "undid late %s of %s", mp_wire_op_name(m->op),
			       cnx->undo[i].name);
		}
		return;
	}
}

/* A timed-out request whose success must be undone may still answer. */
static bool undo_pending(const struct messip_cnx *cnx)
{
	for (unsigned i = 0; i < 8; i++)
		if (cnx->undo[i].op)
			return true;
	return false;
}

static void remember_timeout(struct messip_cnx *cnx,
			     const struct mp_wire_msg *req)
{
	unsigned i;

	if (req->op != MP_OP_CH_CREATE && req->op != MP_OP_CH_CONNECT)
		return;
	i = cnx->nundo++ % 8;
	cnx->undo[i].reqid = req->reqid;
	cnx->undo[i].op = req->op;
	strcpy(cnx->undo[i].name, req->name);
}

/* Handle one pushed (or late) frame.  0, or -EPIPE if answering broke
 * the link (the caller closes it: the input buffer is still in use). */
static int dispatch(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	struct messip_channel_priv *c;
	struct mp_wire_msg a;
	int rc;

	switch (m->op) {
	case MP_OP_BDELIVER:
		if (mp_log_enabled(MESSIP_LOG_DEBUG))
			mp_log(MESSIP_LOG_DEBUG, "MESSIP-BDELIVER",
			       "channel handle %d sequence %llu, %u bytes",
			       (int)m->b, (unsigned long long)m->u,
			       m->datalen);
		c = find_server(cnx, m->b);
		if (c) {
			if (mp_srv_push_buffered(c, m) < 0)
				mp_log(MESSIP_LOG_ERROR, "MESSIP-NOMEM",
				       "buffered message for %s dropped",
				       c->pub->name);
			return 0;
		}
		/* Not ours (any more): acknowledge so the manager can
		 * free it rather than hold it for nobody. */
		memset(&a, 0, sizeof(a));
		a.op = MP_OP_BACK;
		a.b = m->b;
		a.u = m->u;
		mp_cnx_post(cnx, &a);
		return 0;
	case MP_OP_EVENT:
		c = find_server(cnx, m->b);
		if (c && mp_srv_push_event(c, m) < 0) {
			mp_log(MESSIP_LOG_ERROR, "MESSIP-NOMEM",
			       "event %d for %s dropped", (int)m->a,
			       c->pub->name);
			return 0;
		}
		/* Queued (or a copy re-sent after a resume, or not ours any
		 * more): the manager may forget it. */
		memset(&a, 0, sizeof(a));
		a.op = MP_OP_BACK;
		a.flags = MP_WIRE_F_EVENT;
		a.b = m->b;
		a.u = m->u;
		mp_cnx_post(cnx, &a);
		return 0;
	case MP_OP_PING:
		memset(&a, 0, sizeof(a));
		a.op = MP_OP_PONG;
		a.reqid = m->reqid;
		pthread_mutex_lock(&cnx->pipe.lock);
		rc = mp_link_send_msg(&cnx->mgr, &a, mp_time_now_ns());
		pthread_mutex_unlock(&cnx->pipe.lock);
		return rc == -EPIPE ? -EPIPE : 0;
	default:
		if (pipe_answer(cnx, m))
			return 0;
		if (is_answer(m->op)) {
			/* Late answer to a request that timed out. */
			mp_log(MESSIP_LOG_DEBUG, "MESSIP-LATE-ANSWER",
			       "dropped late %s reqid %u",
			       mp_wire_op_name(m->op), m->reqid);
			late_answer(cnx, m);
		} else {
			mp_log(MESSIP_LOG_WARNING, "MESSIP-MGR-UNEXPECTED",
			       "ignored %s from manager",
			       mp_wire_op_name(m->op));
		}
		return 0;
	}
}

/* The ticket a CH_INFO carries is copied out of the link's buffer (the
 * only answer with data): ans then points at the copy. */
static void take_ticket(struct messip_cnx *cnx, const struct mp_wire_msg *m,
			struct mp_wire_msg *ans)
{
	if (m->op != MP_OP_CH_INFO || m->datalen != MP_AUTH_NONCE)
		return;
	memcpy(cnx->info_ticket, m->data, MP_AUTH_NONCE);
	ans->data = cnx->info_ticket;
	ans->datalen = MP_AUTH_NONCE;
}

/* Read and dispatch until the answer to reqid arrives.  0 (ans filled),
 * -ETIMEDOUT, or -EPIPE (the link was lost and is now DOWN). */
static int await_loop(struct messip_cnx *cnx, uint32_t reqid,
		      struct mp_wire_msg *ans, int64_t deadline,
		      struct mp_spin_wait *ws)
{
	struct mp_wire_msg m;
	bool fresh = true;
	int rc;

	for (;;) {
		while ((rc = mp_link_next(&cnx->mgr, &m)) > 0) {
			if (is_answer(m.op) && m.reqid == reqid) {
				*ans = m;
				ans->data = NULL;
				ans->datalen = 0;
				take_ticket(cnx, &m, ans);
				wake_servers(cnx);
				return 0;
			}
			if (dispatch(cnx, &m) < 0) {
				link_lost(cnx, "write error");
				return -EPIPE;
			}
		}
		if (rc < 0) {
			mp_log(MESSIP_LOG_ERROR, "MESSIP-MGR-PROTO",
			       "bad frame from manager %s (%d)", cnx->where,
			       rc);
			link_lost(cnx, "protocol error");
			return -EPIPE;
		}
		/* Right after the request the answer is not there yet: spin
		 * a little (mp_spin), or poll before reading. */
		rc = 0;
		if (!fresh)
			rc = mp_link_fill(&cnx->mgr);
		while (rc == 0 && mp_spin_again(&cnx->spin, ws, deadline))
			rc = mp_link_fill(&cnx->mgr);
		fresh = false;
		if (rc < 0) {
			link_lost(cnx, rc == -EPIPE ? "closed" : "read error");
			return -EPIPE;
		}
		if (rc > 0)
			continue;
		ws->slept = true;
		rc = mgr_wait_input(cnx, deadline);
		if (rc < 0)
			return rc;
	}
}

static int await_answer(struct messip_cnx *cnx, uint32_t reqid,
			struct mp_wire_msg *ans, int64_t deadline)
{
	struct mp_spin_wait ws = {0, false, false, false, false};
	int rc = await_loop(cnx, reqid, ans, deadline, &ws);

	mp_spin_end(&cnx->spin, &ws, rc == 0);
	return rc;
}

/* One request (with data iov) on the current link, no resume: 0,
 * -ETIMEDOUT, -EPIPE. */
static int rpc_once(struct messip_cnx *cnx, struct mp_wire_msg *req,
		    const struct iovec *iov, int iovcnt,
		    struct mp_wire_msg *ans, int64_t deadline)
{
	int rc;

	req->reqid = mp_cnx_reqid(cnx);
	pthread_mutex_lock(&cnx->pipe.lock);
	rc = mp_link_send(&cnx->mgr, req, iov, iovcnt, deadline);
	pthread_mutex_unlock(&cnx->pipe.lock);
	if (rc == -EPIPE)
		link_lost(cnx, "write error");
	if (rc < 0)
		return rc;
	return await_answer(cnx, req->reqid, ans, deadline);
}

/* ------------------------------------------------------------------ */
/* Re-declaring the channels under a new registration.                */

static int redeclare(struct messip_cnx *cnx, struct messip_channel_priv *c,
		     int64_t deadline)
{
	struct mp_wire_msg req, ans;
	struct iovec tiov;
	int rc;

	for (;;) {
		memset(&req, 0, sizeof(req));
		strcpy(req.name, c->pub->name);
		if (c->server) {
			req.op = MP_OP_CH_CREATE;
			req.a = c->srv.maxbuf;
			strcpy(req.addr, c->addr);
			req.u = cnx->my_host;
			/* The same ticket: its clients keep their links. */
			req.datalen = (uint32_t)mp_chan_ticket_iov(c, &tiov);
		} else {
			req.op = MP_OP_CH_CONNECT;
		}
		rc = rpc_once(cnx, &req, &tiov, req.datalen ? 1 : 0, &ans,
			      deadline);
		if (rc < 0)
			return rc;
		/* The old registration's channels may still be on their
		 * way out (the manager had not yet seen the old link
		 * close): wait for the name to be freed. */
		if (c->server && ans.a == EEXIST &&
		    mp_time_now_ns() + ms_ns(100) < deadline) {
			usleep(50000);
			continue;
		}
		break;
	}
	c->epoch = cnx->epoch; /* declared, or given up: not retried */
	if (!c->server && ans.a == ENOENT && c->relocate_by) {
		/* Its server has not declared it again yet: the next call
		 * that needs the handle looks for it (mp_chan_cli_handle). */
		c->handle = -1;
		mp_log(MESSIP_LOG_INFO, "MESSIP-CHANNEL-WAIT",
		       "channel %s not declared again yet: looked for until "
		       "%d ms after the new registration",
		       c->pub->name, MP_RELOCATE_MS);
		return 0;
	}
	c->relocate_by = 0;
	if (ans.a != 0) {
		c->handle = -1;
		mp_log(MESSIP_LOG_ERROR, "MESSIP-CHANNEL-LOST",
		       "channel %s could not be %s again: %s", c->pub->name,
		       c->server ? "created" : "connected",
		       strerror(-peer_status(ans.a)));
		return 0;
	}
	if (!c->server && mp_chan_take_ticket(c, &ans) < 0) {
		c->handle = -1;
		mp_log(MESSIP_LOG_ERROR, "MESSIP-CHANNEL-LOST",
		       "channel %s: the manager gave no ticket",
		       c->pub->name);
		return 0;
	}
	c->handle = ans.b;
	if (!c->server)
		c->cli.server_regno = ans.c;
	if (c->server) {
		c->gen = ans.u;
		mp_srv_link_restored(c, true);
	}
	return 0;
}

static void reregister(struct messip_cnx *cnx)
{
	int64_t deadline = mp_time_now_ns() + ms_ns(REREG_MS);
	struct mp_wire_msg req, ans;

	cnx->in_rereg = true;
	mp_log(MESSIP_LOG_WARNING, "MESSIP-REREGISTER",
	       "registration expired, declaring channels again as %d",
	       (int)cnx->regno);
	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next) {
		if (c->epoch == cnx->epoch)
			continue;
		if (redeclare(cnx, c, deadline) < 0)
			goto out;
	}
	if (cnx->death_notify) {
		memset(&req, 0, sizeof(req));
		req.op = MP_OP_DEATH_NOTIFY;
		req.a = 1;
		if (rpc_once(cnx, &req, NULL, 0, &ans, deadline) < 0)
			goto out;
	}
	cnx->rereg = false;
out:
	cnx->in_rereg = false;
	if (!cnx->rereg && pipe_write(cnx) == -EPIPE)
		link_lost(cnx, "write error");
}

/* ------------------------------------------------------------------ */
/* The resume state machine.                                           */

static void start_attempt(struct messip_cnx *cnx, int64_t now)
{
	struct mp_wire_msg m;
	int fd = -1, rc;

	rc = mp_sock_connect_start((struct sockaddr *)&cnx->sa, cnx->salen,
				   &fd);
	cnx->try_end = now + ms_ns(ATTEMPT_MS);
	if (rc < 0) {
		cnx->state = MP_CNX_CONNECTING; /* so link_lost backs off */
		link_lost(cnx, strerror(-rc));
		return;
	}
	mp_link_init(&cnx->mgr, fd, MP_MAX_DATA);
	if (mp_link_start_tls(&cnx->mgr, cnx->host) < 0) {
		cnx->state = MP_CNX_CONNECTING; /* so link_lost backs off */
		link_lost(cnx, "TLS set-up failed");
		return;
	}
	if (rc == 1) {
		cnx->state = MP_CNX_CONNECTING;
		sync_watch(cnx);
		return;
	}
	cnx->state = MP_CNX_HELLO;
	mp_prove_reset(&cnx->auth);
	hello_msg(cnx, &m, cnx->token != 0);
	if (mp_link_send_msg(&cnx->mgr, &m, cnx->try_end) < 0) {
		link_lost(cnx, "HELLO not sent");
		return;
	}
	sync_watch(cnx);
}

static void resumed(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	bool fresh = cnx->token == 0 || m->b != cnx->regno;

	take_welcome(cnx, m);
	cnx->state = MP_CNX_UP;
	sync_watch(cnx);
	if (fresh) {
		/* Every handle belongs to the old registration, and the
		 * held frames carry those handles: re-sent, they could reach
		 * whatever channel holds that slot now.  They share the fate
		 * of the old registration's queued messages (logged). */
		pipe_drop(cnx, "registration not resumed");
		/* A client channel whose server has not declared it again by
		 * the time we ask is looked for a while (mp_chan_cli_handle). */
		cnx->epoch++;
		cnx->rereg = true;
		for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
			if (!c->server)
				c->relocate_by = mp_time_now_ns() +
						 ms_ns(MP_RELOCATE_MS);
		mp_log(MESSIP_LOG_WARNING, "MESSIP-MGR-NEWREG",
		       "manager %s: new registration %d", cnx->where,
		       (int)cnx->regno);
	} else {
		/* Unconfirmed buffered sends go again, first, with their
		 * reqids: the manager drops those it queued already. */
		cnx->pipe.wr = cnx->pipe.off;
		if (pipe_write(cnx) == -EPIPE) {
			link_lost(cnx, "write error");
			return;
		}
		for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
			if (c->server)
				mp_srv_link_restored(c, false);
		mp_log(MESSIP_LOG_INFO, "MESSIP-MGR-RESUMED",
		       "registration %d resumed on manager %s", (int)cnx->regno,
		       cnx->where);
	}
}

static void pump_hello(struct messip_cnx *cnx, int64_t now)
{
	struct mp_wire_msg m;
	int rc;

	for (;;) {
		rc = mp_link_next(&cnx->mgr, &m);
		if (rc < 0) {
			link_lost(cnx, "bad WELCOME");
			return;
		}
		if (rc == 0) {
			rc = mp_link_fill(&cnx->mgr);
			if (rc < 0) {
				link_lost(cnx, "closed during HELLO");
				return;
			}
			if (rc > 0)
				continue;
			if (now >= cnx->try_end)
				link_lost(cnx, "no WELCOME");
			return;
		}
		rc = auth_step(cnx, &m, cnx->try_end);
		if (rc < 0) {
			link_lost(cnx, "authentication failed");
			return;
		}
		if (rc > 0)
			continue;
		if (m.op != MP_OP_WELCOME || m.reqid != cnx->hello_reqid)
			continue; /* nothing else is meaningful yet */
		if (m.a == 0 && welcome_allowed(cnx) < 0) {
			link_lost(cnx, "manager not authenticated");
			return;
		}
		if (m.a == 0) {
			resumed(cnx, &m);
			return;
		}
		if (m.a == ESTALE) {
			/* The registration is gone: take a new one at once
			 * on a new link (u = 0). */
			cnx->token = 0;
			cnx->state = MP_CNX_HELLO;
			link_lost(cnx, "registration expired");
			cnx->next_try = now;
			return;
		}
		link_lost(cnx, strerror(-peer_status(m.a)));
		return;
	}
}

static void pump_up(struct messip_cnx *cnx)
{
	struct mp_wire_msg m;
	int rc;

	pthread_mutex_lock(&cnx->pipe.lock);
	rc = mp_link_pending_out(&cnx->mgr)
		     ? mp_link_flush(&cnx->mgr, mp_time_now_ns())
		     : 0;
	pthread_mutex_unlock(&cnx->pipe.lock);
	if (rc == -EPIPE) {
		link_lost(cnx, "write error");
		return;
	}
	if (pipe_write(cnx) == -EPIPE) {
		link_lost(cnx, "write error");
		return;
	}
	for (int i = 0; i < PUMP_READS; i++) {
		while ((rc = mp_link_next(&cnx->mgr, &m)) > 0) {
			if (dispatch(cnx, &m) < 0) {
				link_lost(cnx, "write error");
				return;
			}
		}
		if (rc < 0) {
			mp_log(MESSIP_LOG_ERROR, "MESSIP-MGR-PROTO",
			       "bad frame from manager %s (%d)", cnx->where,
			       rc);
			link_lost(cnx, "protocol error");
			return;
		}
		rc = mp_link_fill(&cnx->mgr);
		if (rc < 0) {
			link_lost(cnx, "closed");
			return;
		}
		if (rc == 0)
			return;
	}
}

void mp_cnx_pump(struct messip_cnx *cnx)
{
	int64_t now = mp_time_now_ns();
	struct mp_wire_msg m;
	int rc;

	switch (cnx->state) {
	case MP_CNX_DEAD:
		return;
	case MP_CNX_DOWN:
		if (!check_grace(cnx, now) && now >= cnx->next_try)
			start_attempt(cnx, now);
		break;
	case MP_CNX_CONNECTING:
		rc = mp_sock_connect_finish(cnx->mgr.fd);
		if (rc == -EINPROGRESS) {
			if (now >= cnx->try_end)
				link_lost(cnx, "connect timed out");
			break;
		}
		if (rc < 0) {
			link_lost(cnx, strerror(-rc));
			break;
		}
		cnx->state = MP_CNX_HELLO;
		mp_prove_reset(&cnx->auth);
		hello_msg(cnx, &m, cnx->token != 0);
		if (mp_link_send_msg(&cnx->mgr, &m, cnx->try_end) < 0) {
			link_lost(cnx, "HELLO not sent");
			break;
		}
		sync_watch(cnx);
		break;
	case MP_CNX_HELLO:
		pump_hello(cnx, now);
		break;
	case MP_CNX_UP:
		pump_up(cnx);
		break;
	}
	if (cnx->state == MP_CNX_UP && cnx->rereg && !cnx->in_rereg)
		reregister(cnx);
}

int mp_cnx_wait_up(struct messip_cnx *cnx, int64_t deadline)
{
	for (;;) {
		int64_t until;

		if (cnx->state != MP_CNX_UP || cnx->rereg)
			mp_cnx_pump(cnx);
		if (cnx->state == MP_CNX_UP)
			return 0;
		if (cnx->state == MP_CNX_DEAD)
			return -ESHUTDOWN;
		if (mp_time_now_ns() >= deadline)
			return -ETIMEDOUT;
		until = min64(deadline, mp_cnx_wake_time(cnx));
		if (cnx->mgr.fd >= 0)
			mp_sock_wait(cnx->mgr.fd, mp_cnx_poll_events(cnx),
				     until);
		else
			poll(NULL, 0, mp_time_left_ms(until));
	}
}

int mp_cnx_rpc(struct messip_cnx *cnx, struct mp_wire_msg *req,
	       const struct iovec *iov, int iovcnt, struct mp_wire_msg *ans,
	       int64_t deadline, int64_t slack_ns)
{
	int64_t late = add_sat(deadline, slack_ns);
	bool sent = false;
	int rc;

	req->reqid = mp_cnx_reqid(cnx);
	/* Take in what already arrived first when a late answer may be
	 * there to undo, so that the undo goes out before this request
	 * (otherwise, a read that would find nothing is saved). */
	if (cnx->state == MP_CNX_UP && !cnx->in_rereg && undo_pending(cnx))
		pump_up(cnx);
	for (;;) {
		if (cnx->state != MP_CNX_UP) {
			rc = mp_cnx_wait_up(cnx, deadline);
			if (rc < 0)
				return rc;
			sent = false; /* re-send on the resumed link */
		}
		if (!sent) {
			pthread_mutex_lock(&cnx->pipe.lock);
			rc = 0;
			if (pipe_has_unwritten(&cnx->pipe)) {
				/* Pipelined BSENDs go before this request. */
				rc = mp_link_send_raw(
					&cnx->mgr, cnx->pipe.buf + cnx->pipe.wr,
					cnx->pipe.len - cnx->pipe.wr, late);
				if (rc == 0) {
					cnx->pipe.wr = cnx->pipe.len;
					__atomic_store_n(&cnx->pipe.armed, 0,
							 __ATOMIC_RELAXED);
				}
			}
			if (rc == 0)
				rc = mp_link_send(&cnx->mgr, req, iov, iovcnt,
						  late);
			pthread_mutex_unlock(&cnx->pipe.lock);
			if (rc == -EPIPE) {
				link_lost(cnx, "write error");
				continue;
			}
			if (rc < 0)
				return rc;
			sent = true;
		}
		rc = await_answer(cnx, req->reqid, ans, late);
		if (rc == -ETIMEDOUT)
			remember_timeout(cnx, req);
		if (rc != -EPIPE)
			return rc;
	}
}

int mp_cnx_post(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	int rc;

	if (cnx->state != MP_CNX_UP)
		return -EAGAIN;
	/* A write error is not acted on here: post is called from inside
	 * dispatch, while the input buffer is being walked.  A broken link
	 * also fails its next read (EOF / reset, or EPOLLERR in receive),
	 * and that is where it is closed. */
	pthread_mutex_lock(&cnx->pipe.lock);
	rc = mp_link_send_msg(&cnx->mgr, m, mp_time_now_ns());
	pthread_mutex_unlock(&cnx->pipe.lock);
	return rc < 0 ? -EAGAIN : 0;
}

/* ------------------------------------------------------------------ */
/* Finding the manager and registering.                                */

/* First non-comment line of path: "host [port [status_port]]".
 * 0, -ENOENT (no file, or no such line), -EINVAL (bad line). */
static int read_conf(const char *path, char *host, size_t hsz, int *port)
{
	char line[512];
	FILE *f = fopen(path, "re");
	int rc = -ENOENT;

	if (!f)
		return -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok, *hash = strchr(line, '#');

		if (hash)
			*hash = '\0';
		tok = strtok_r(line, " \t\r\n", &save);
		if (!tok)
			continue;
		rc = mp_sock_parse_ref(tok, host, hsz, port);
		tok = strtok_r(NULL, " \t\r\n", &save);
		if (rc == 0 && tok) {
			char *end;
			long v = strtol(tok, &end, 10);

			if (*end || v <= 0 || v > 65535)
				rc = -EINVAL;
			else
				*port = (int)v;
		}
		break;
	}
	fclose(f);
	return rc;
}

/* mgr_ref, $MESSIP_MGR, the file ($MESSIP_CONFIG or /etc/messip), then
 * localhost: the first that is given decides (a bad one is an error). */
static int resolve_target(const char *ref, char *host, size_t hsz, int *port)
{
	const char *env, *file;
	int rc;

	*port = MESSIP_DEFAULT_PORT;
	if (ref)
		return mp_sock_parse_ref(ref, host, hsz, port);
	env = getenv("MESSIP_MGR");
	if (env && *env)
		return mp_sock_parse_ref(env, host, hsz, port);
	file = getenv("MESSIP_CONFIG");
	if (!file || !*file)
		file = CONF_FILE;
	rc = read_conf(file, host, hsz, port);
	if (rc != -ENOENT)
		return rc;
	*port = MESSIP_DEFAULT_PORT;
	snprintf(host, hsz, "localhost");
	return 0;
}

/* Connect and register, trying each address of the manager in turn;
 * the one that answered is kept for resuming. */
static int first_connect(struct messip_cnx *cnx,
			 const struct sockaddr_storage *sa,
			 const socklen_t *salen, int naddr, int64_t deadline)
{
	struct mp_wire_msg m;
	int fd = -ECONNREFUSED, rc;

	for (int i = 0; i < naddr; i++) {
		fd = mp_sock_connect((const struct sockaddr *)&sa[i], salen[i],
				     deadline);
		if (fd >= 0) {
			cnx->sa = sa[i];
			cnx->salen = salen[i];
			break;
		}
		if (fd == -ETIMEDOUT)
			break;
	}
	if (fd < 0)
		return fd == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;
	mp_link_init(&cnx->mgr, fd, MP_MAX_DATA);
	mp_prove_reset(&cnx->auth);
	hello_msg(cnx, &m, false);
	/* With TLS the send waits for the handshake (EACCES, EPROTO). */
	rc = mp_link_start_tls(&cnx->mgr, cnx->host);
	if (rc == 0)
		rc = mp_link_send_msg(&cnx->mgr, &m, deadline);
	/* WELCOME, or first the authentication exchange. */
	while (rc == 0) {
		rc = mp_link_recv(&cnx->mgr, &m, deadline);
		if (rc >= 0) {
			rc = auth_step(cnx, &m, deadline);
			if (rc == 1)
				rc = 0;
			else if (rc == 0)
				rc = 1;
		}
	}
	if (rc == -EPIPE)
		rc = -ECONNREFUSED;
	else if (rc == -EMSGSIZE)
		rc = -EPROTO;
	if (rc >= 0 && (m.op != MP_OP_WELCOME || m.reqid != cnx->hello_reqid))
		rc = -EPROTO;
	if (rc >= 0 && m.a != 0)
		rc = peer_status(m.a);
	if (rc >= 0)
		rc = welcome_allowed(cnx);
	if (rc < 0) {
		mp_link_close(&cnx->mgr);
		return rc;
	}
	take_welcome(cnx, &m);
	cnx->state = MP_CNX_UP;
	return 0;
}

MESSIP_EXPORT void messip_init(void)
{
	/* Nothing process-wide to set up: the library keeps no global state
	 * but the log settings (statically initialised) and installs no
	 * signal handler.  Kept for the classic API; safe any number of
	 * times, from any thread, before or after fork(). */
}

MESSIP_EXPORT messip_cnx_t *messip_connect(const char *mgr_ref, const char *id,
					   int msec_timeout)
{
	int64_t deadline = mp_time_deadline(msec_timeout);
	struct sockaddr_storage sa[MP_CNX_MAX_ADDRS];
	socklen_t salen[MP_CNX_MAX_ADDRS];
	char host[MP_SOCK_HOST_MAX];
	struct messip_cnx *cnx;
	int port, rc, n = 0;

	cnx = mp_calloc(1, sizeof(*cnx));
	if (!cnx)
		return mp_fail_ptr(-ENOMEM);
	cnx->magic = MP_CNX_MAGIC;
	cnx->src.kind = MP_SRC_MGR;
	cnx->pipe.queued = -1;
	pthread_mutex_init(&cnx->pipe.lock, NULL);
	mp_link_init(&cnx->mgr, -1, MP_MAX_DATA);
	if (id)
		snprintf(cnx->id, sizeof(cnx->id), "%s", id);
	rc = resolve_target(mgr_ref, host, sizeof(host), &port);
	if (rc == 0)
		rc = load_secret(cnx);
	if (rc == 0)
		rc = n = mp_sock_resolve(host, port, sa, salen,
					 MP_CNX_MAX_ADDRS);
	if (rc > 0) {
		snprintf(cnx->where, sizeof(cnx->where), "%s:%d", host, port);
		snprintf(cnx->host, sizeof(cnx->host), "%s", host);
		rc = first_connect(cnx, sa, salen, n, deadline);
	}
	if (rc < 0) {
		mp_log(MESSIP_LOG_DEBUG, "MESSIP-CONNECT",
		       "connect to manager %s failed: %s",
		       cnx->where[0] ? cnx->where : "?", strerror(-rc));
		cnx->magic = 0;
		mp_auth_key_clear(&cnx->key);
		free(cnx);
		return mp_fail_ptr(rc);
	}
	mp_log(MESSIP_LOG_INFO, "MESSIP-CONNECTED",
	       "registered as %d (\"%s\") with manager %s", (int)cnx->regno,
	       cnx->id, cnx->where);
	return cnx;
}

MESSIP_EXPORT int messip_disconnect(messip_cnx_t *handle, int msec_timeout)
{
	struct messip_cnx *cnx = mp_cnx_get(handle);
	struct mp_wire_msg req, ans;

	if (!cnx)
		return mp_fail(-EINVAL);
	if (cnx->state != MP_CNX_DEAD) {
		/* Clean end: the manager removes our channels and tells the
		 * servers we were connected to (DISCONNECT, not DISMISSED).
		 * Best effort: the handle is freed whatever happens. */
		memset(&req, 0, sizeof(req));
		req.op = MP_OP_BYE;
		mp_cnx_rpc(cnx, &req, NULL, 0, &ans,
			   mp_time_deadline(msec_timeout), 0);
	}
	while (cnx->chans)
		mp_chan_destroy(cnx->chans); /* unlinks itself */
	fl_forget(cnx);
	close_link(cnx);
	pthread_mutex_destroy(&cnx->pipe.lock);
	free(cnx->pipe.buf);
	free(cnx->pipe.fr);
	cnx->magic = 0;
	mp_auth_key_clear(&cnx->key);
	free(cnx);
	return 0;
}

MESSIP_EXPORT int messip_death_notify(messip_cnx_t *handle, int msec_timeout,
				      int status)
{
	struct messip_cnx *cnx = mp_cnx_get(handle);
	struct mp_wire_msg req, ans;
	int rc;

	if (!cnx)
		return mp_fail(-EINVAL);
	memset(&req, 0, sizeof(req));
	req.op = MP_OP_DEATH_NOTIFY;
	req.a = status ? 1 : 0;
	rc = mp_cnx_rpc(cnx, &req, NULL, 0, &ans,
			mp_time_deadline(msec_timeout), 0);
	if (rc == 0 && ans.a != 0)
		rc = peer_status(ans.a);
	if (rc < 0)
		return mp_fail(rc);
	cnx->death_notify = status != 0;
	return 0;
}
