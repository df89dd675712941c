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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "messip.h"
#include "mp_alloc.h"
#include "mp_chan.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_log.h"
#include "mp_srv.h"
#include "mp_time.h"

#define BACKOFF_MIN_MS	 50
#define BACKOFF_MAX_MS	 1000
#define ATTEMPT_MS	 1000 /* one resume attempt, connect + HELLO */
#define REREG_MS	 2000 /* re-declaring channels after ESTALE */
#define PUMP_READS	 16   /* reads per pump: bounded, then yield */
#define CONF_FILE	 "/etc/messip"
#define MP_CNX_MAX_ADDRS 8 /* addresses of the manager tried */

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
	mp_link_close(&cnx->mgr);
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
}

/* A positive errno from the peer, checked: anything else is EPROTO. */
static int peer_status(int32_t a)
{
	return (a > 0 && a < 4096) ? -a : -EPROTO;
}

static void take_welcome(struct messip_cnx *cnx, const struct mp_wire_msg *m)
{
	cnx->regno = m->b;
	cnx->token = m->u;
	cnx->host_token = strtoull(m->addr, NULL, 10);
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
		if (mp_link_send_msg(&cnx->mgr, &a, mp_time_now_ns()) == -EPIPE)
			return -EPIPE;
		return 0;
	default:
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
		rc = mp_sock_wait(cnx->mgr.fd, POLLIN, deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0) {
			link_lost(cnx, "poll error");
			return -EPIPE;
		}
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

/* One request on the current link, no resume: 0, -ETIMEDOUT, -EPIPE. */
static int rpc_once(struct messip_cnx *cnx, struct mp_wire_msg *req,
		    struct mp_wire_msg *ans, int64_t deadline)
{
	int rc;

	req->reqid = mp_cnx_reqid(cnx);
	rc = mp_link_send_msg(&cnx->mgr, req, deadline);
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
	int rc;

	for (;;) {
		memset(&req, 0, sizeof(req));
		strcpy(req.name, c->pub->name);
		if (c->server) {
			req.op = MP_OP_CH_CREATE;
			req.a = c->srv.maxbuf;
			strcpy(req.addr, c->addr);
			req.u = cnx->my_host;
		} else {
			req.op = MP_OP_CH_CONNECT;
		}
		rc = rpc_once(cnx, &req, &ans, deadline);
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
	if (ans.a != 0) {
		c->handle = -1;
		mp_log(MESSIP_LOG_ERROR, "MESSIP-CHANNEL-LOST",
		       "channel %s could not be %s again: %s", c->pub->name,
		       c->server ? "created" : "connected",
		       strerror(-peer_status(ans.a)));
		return 0;
	}
	c->handle = ans.b;
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
		if (rpc_once(cnx, &req, &ans, deadline) < 0)
			goto out;
	}
	cnx->rereg = false;
out:
	cnx->in_rereg = false;
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
	if (rc == 1) {
		cnx->state = MP_CNX_CONNECTING;
		sync_watch(cnx);
		return;
	}
	cnx->state = MP_CNX_HELLO;
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
		/* Every handle belongs to the old registration. */
		cnx->epoch++;
		cnx->rereg = true;
		mp_log(MESSIP_LOG_WARNING, "MESSIP-MGR-NEWREG",
		       "manager %s: new registration %d", cnx->where,
		       (int)cnx->regno);
	} else {
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
		if (m.op != MP_OP_WELCOME || m.reqid != cnx->hello_reqid)
			continue; /* nothing else is meaningful yet */
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

	if (mp_link_pending_out(&cnx->mgr) &&
	    mp_link_flush(&cnx->mgr, mp_time_now_ns()) == -EPIPE) {
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
			rc = mp_link_send(&cnx->mgr, req, iov, iovcnt, late);
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
	if (cnx->state != MP_CNX_UP)
		return -EAGAIN;
	/* A write error is not acted on here: post is called from inside
	 * dispatch, while the input buffer is being walked.  A broken link
	 * also fails its next read (EOF / reset, or EPOLLERR in receive),
	 * and that is where it is closed. */
	return mp_link_send_msg(&cnx->mgr, m, mp_time_now_ns()) < 0 ? -EAGAIN
								    : 0;
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
	hello_msg(cnx, &m, false);
	rc = mp_link_send_msg(&cnx->mgr, &m, deadline);
	if (rc == 0)
		rc = mp_link_recv(&cnx->mgr, &m, deadline);
	if (rc == -EPIPE)
		rc = -ECONNREFUSED;
	else if (rc == -EMSGSIZE)
		rc = -EPROTO;
	if (rc >= 0 && (m.op != MP_OP_WELCOME || m.reqid != cnx->hello_reqid))
		rc = -EPROTO;
	if (rc >= 0 && m.a != 0)
		rc = peer_status(m.a);
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
	mp_link_init(&cnx->mgr, -1, MP_MAX_DATA);
	if (id)
		snprintf(cnx->id, sizeof(cnx->id), "%s", id);
	rc = resolve_target(mgr_ref, host, sizeof(host), &port);
	if (rc == 0)
		rc = n = mp_sock_resolve(host, port, sa, salen,
					 MP_CNX_MAX_ADDRS);
	if (rc > 0) {
		snprintf(cnx->where, sizeof(cnx->where), "%s:%d", host, port);
		rc = first_connect(cnx, sa, salen, n, deadline);
	}
	if (rc < 0) {
		mp_log(MESSIP_LOG_DEBUG, "MESSIP-CONNECT",
		       "connect to manager %s failed: %s",
		       cnx->where[0] ? cnx->where : "?", strerror(-rc));
		cnx->magic = 0;
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
	close_link(cnx);
	cnx->magic = 0;
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
