/*
 * mp_cli — client side of a channel (see mp_cli.h).
 *
 * Invariants: at most one request of this handle is waited for at a time
 * (the handle is used by one thread at a time); a REPLY that is not the
 * awaited one belongs to an asynchronous request (filed with it by
 * mp_async_stash) or is stale and dropped, as is a PONG not awaited; once
 * the link is closed (fd -1) it stays closed and every call reports ESRCH.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "messip.h"
#include "mp_async.h"
#include "mp_chan.h"
#include "mp_cli.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_inproc.h"
#include "mp_iov.h"
#include "mp_local.h"
#include "mp_log.h"
#include "mp_prove.h"
#include "mp_time.h"

#define MP_BSEND_SLACK_MS 2000 /* the manager answers BSEND at its deadline */
#define MP_DIRECT_MIN	  8192 /* reply buffers read into without a copy */
#define MP_READ_WAIT_MS	  100  /* longest blocking read of a reply */
#define MP_READ_WAIT_NS	  ((int64_t)MP_READ_WAIT_MS * 1000000 * 2)
#define MP_GATHER_MAX	  65536 /* requests gathered for one write at most */
#define MP_GATHER_BATCH	  2048	/* ... written as soon as this much is */

static uint32_t next_reqid(struct mp_cli *k)
{
	if (++k->reqid == 0)
		k->reqid = 1;
	return k->reqid;
}

static void link_gone(struct messip_channel_priv *c, const char *why)
{
	if (why)
		mp_log(MESSIP_LOG_WARNING, "MESSIP-SERVER-PROTO",
		       "channel %s: %s, link closed", c->pub->name, why);
	mp_link_close(&c->cli.link);
}

/* With d, while the input buffer is empty the awaited frame's data is
 * read straight into the caller's buffer (mp_link_fill_direct); with
 * wait, the read may block (c->cli.blocking links only). */
static int cli_fill(struct mp_link *l, struct mp_link_direct *d, bool wait)
{
	if (d && (d->matched || !mp_link_has_input(l)))
		return mp_link_fill_direct(l, d, wait);
	return wait ? mp_link_fill_wait(l) : mp_link_fill(l);
}

/*
 * Wait for the frame op/reqid from the server, servicing the manager link
 * meanwhile.  0 (m filled; its data valid until the next read), -ETIMEDOUT,
 * -ESRCH (link closed), -EPROTO.
 */
static int cli_wait_loop(struct messip_channel_priv *c, unsigned op,
			 uint32_t reqid, struct mp_wire_msg *m,
			 int64_t deadline, struct mp_spin_wait *ws,
			 struct mp_link_direct *d)
{
	struct messip_cnx *cnx = c->cnx;
	struct mp_link *l = &c->cli.link;
	bool waited = false, try_read = mp_link_has_input(l);
	int rc;

	for (;;) {
		struct pollfd p[2];
		int64_t now, until;
		int n = 1;

		if (d && d->matched) {
			/* The reply is being read into the caller's
			 * buffer: nothing else comes before it. */
			if (d->got == d->m.datalen) {
				*m = d->m;
				return 0;
			}
			rc = 0;
		} else {
			rc = mp_link_next(l, m);
		}
		for (; rc > 0; rc = mp_link_next(l, m)) {
			if (m->op == op && m->reqid == reqid)
				return 0;
			if (m->op == MP_OP_WELCOME &&
			    m->reqid == c->cli.hello_reqid) {
				c->cli.hello_reqid = 0;
				if (m->a == 0)
					continue;
				/* Not (any more) the server of this
				 * channel: as good as gone. */
				link_gone(c, NULL);
				return -ESRCH;
			}
			if (m->op == MP_OP_CHALLENGE && !c->cli.auth.stage)
				continue; /* a same-host link proves nothing */
			if (m->op != MP_OP_REPLY && m->op != MP_OP_PONG) {
				link_gone(c, "unexpected frame from server");
				return -EPROTO;
			}
			/* Another request's reply, or a late one (its
			 * request timed out or was withdrawn): dropped. */
			if (m->op == MP_OP_REPLY && c->cli.nreqs)
				mp_async_stash(c, m);
		}
		if (rc < 0) {
			link_gone(c, "bad frame from server");
			return -EPROTO;
		}
		/* Read what is there; right after a send that is nothing
		 * yet: spin a little (mp_spin), or go straight to poll and
		 * read when it says so. */
		if (try_read) {
			rc = cli_fill(l, d, false);
		} else {
			rc = 0;
			while (mp_spin_again(&c->cli.spin, ws, deadline) &&
			       (rc = cli_fill(l, d, false)) == 0)
				;
		}
		try_read = true;
		if (rc == -ENOMEM)
			return rc; /* nothing was read: the link is intact */
		if (rc < 0) {
			link_gone(c, rc == -EPIPE ? NULL : "bad frame");
			return rc == -EPIPE ? -ESRCH : -EPROTO;
		}
		if (rc > 0)
			continue;
		/* Gathered requests (MESSIP_OPT_GATHER) the socket could
		 * not take yet: write what it takes now, and watch for room
		 * below, so a wait never stalls its own request. */
		if (mp_link_pending_out(l) && mp_link_flush(l, 0) == -EPIPE) {
			link_gone(c, NULL);
			return -ESRCH;
		}
		now = mp_time_now_ns();
		if (waited && now >= deadline)
			return -ETIMEDOUT;
		p[0].fd = l->fd;
		p[0].events = POLLIN | (mp_link_pending_out(l) ? POLLOUT : 0);
		if (mp_cnx_fd(cnx) >= 0) {
			p[1].fd = mp_cnx_fd(cnx);
			p[1].events = mp_cnx_poll_events(cnx);
			n = 2;
		}
		until = mp_cnx_wake_time(cnx);
		if (until > deadline)
			until = deadline;
		ws->slept = true;
		if (c->cli.blocking && until - now > MP_READ_WAIT_NS &&
		    !mp_link_frame_ready(&cnx->mgr) &&
		    !mp_link_pending_out(l)) {
			/* Sleep in the read itself (one system call, as a
			 * blocking read would); the manager link is looked
			 * at when it times out, every MP_READ_WAIT_MS. */
			rc = cli_fill(l, d, true);
			waited = true;
			if (rc == -ENOMEM)
				return rc;
			if (rc < 0) {
				link_gone(c, rc == -EPIPE ? NULL : "bad frame");
				return rc == -EPIPE ? -ESRCH : -EPROTO;
			}
			if (rc == 0)
				mp_cnx_pump(cnx);
			continue;
		}
		rc = poll(p, (nfds_t)n, mp_time_left_ms(until));
		waited = true;
		if (rc < 0 && errno != EINTR)
			return -errno;
		if ((rc > 0 && n == 2 && p[1].revents) ||
		    mp_cnx_wake_time(cnx) <= mp_time_now_ns())
			mp_cnx_pump(cnx);
	}
}

/* Wait as cli_wait_loop(); d as there (NULL: the usual way). */
static int cli_wait_into(struct messip_channel_priv *c, unsigned op,
			 uint32_t reqid, struct mp_wire_msg *m,
			 int64_t deadline, struct mp_link_direct *d)
{
	struct mp_spin_wait ws = {0, false, false, false, false};
	int rc = cli_wait_loop(c, op, reqid, m, deadline, &ws, d);

	mp_spin_end(&c->cli.spin, &ws, rc == 0);
	return rc;
}

static int cli_wait(struct messip_channel_priv *c, unsigned op, uint32_t reqid,
		    struct mp_wire_msg *m, int64_t deadline)
{
	return cli_wait_into(c, op, reqid, m, deadline, NULL);
}

void mp_cli_defer(struct messip_channel_priv *c)
{
	if (c->cli.nreqs)
		mp_async_link_lost(c); /* their replies went with the link */
	mp_link_close(&c->cli.link);
	c->cli.opened = false;
	c->cli.connecting = false;
	c->cli.late_possible = false;
	c->cli.blocking = false;
	c->cli.hello_reqid = 0;
	c->cli.proving = false;
	c->cli.refused = false;
}

bool mp_cli_usable(struct messip_channel_priv *c)
{
	if (!c->cli.opened)
		return true;
	if (c->cli.link.fd >= 0 && !mp_sock_hung_up(c->cli.link.fd))
		return true;
	mp_link_close(&c->cli.link); /* the server is gone */
	return false;
}

/* Start connecting to sa.  0, -ESRCH (refused at once: gone for good). */
static int start_link(struct messip_channel_priv *c, const struct sockaddr *sa,
		      socklen_t salen)
{
	char host[NI_MAXHOST];
	int fd = -1, rc;

	mp_cli_defer(c);
	c->cli.opened = true;
	rc = mp_sock_connect_start(sa, salen, &fd);
	if (rc < 0)
		return -ESRCH;
	mp_link_init(&c->cli.link, fd, MP_MAX_DATA);
	c->cli.connecting = rc == 1;
	/* TLS (MESSIP_TLS_CA): the server's certificate must name the
	 * address dialled. */
	if (getnameinfo(sa, salen, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		host[0] = 0;
	rc = mp_link_start_tls(&c->cli.link, host);
	if (rc < 0) {
		mp_link_close(&c->cli.link);
		return rc;
	}
	c->cli.proving = true;
	mp_prove_reset(&c->cli.auth);
	return 0;
}

/*
 * Prove the channel ticket to the server, and check its proof
 * (doc/protocol.md, "Direct link authentication"; the exchange is
 * mp_prove's, the same as on the manager link).  The server challenges
 * as soon as it accepts.  A deadline that passes midway leaves the
 * exchange where it is, for the next call.  0, -ETIMEDOUT, -ENOMEM, -EACCES
 * (refused, or not the channel's server: the link is closed and every
 * later call says EACCES), -ESRCH (closed), -EPROTO.
 */
static int cli_prove(struct messip_channel_priv *c, int64_t deadline)
{
	char who[MESSIP_CHANNEL_NAME_MAXLEN + 32];
	struct mp_wire_msg m;
	int rc;

	snprintf(who, sizeof(who), "the server of channel %s", c->pub->name);
	while (c->cli.auth.stage != MP_PROVE_DONE) {
		rc = mp_link_recv(&c->cli.link, &m, deadline);
		if (rc == -ETIMEDOUT || rc == -ENOMEM)
			return rc; /* nothing consumed: the next call goes on */
		if (rc > 0)
			rc = mp_prove_step(&c->cli.auth, &c->ticket,
					   &c->cli.link, &m, 0,
					   m.op == MP_OP_CHALLENGE
						   ? next_reqid(&c->cli)
						   : 0,
					   deadline, who);
		if (rc == -EACCES) {
			link_gone(c, NULL);
			c->cli.refused = true;
			return rc;
		}
		if (rc == -EPIPE || rc == -ETIMEDOUT) {
			/* Closed, or our AUTH could not even be written. */
			link_gone(c, NULL);
			return -ESRCH;
		}
		if (rc <= 0) {
			link_gone(c, "bad authentication exchange");
			return -EPROTO;
		}
	}
	c->cli.proving = false;
	return 0;
}

/* The link is proven: say HELLO.  It is pipelined: the WELCOME is
 * checked by the first wait (cli_wait). */
static int send_hello(struct messip_channel_priv *c, int64_t deadline)
{
	struct mp_wire_msg m;
	int rc;

	/* Connected: waits may sleep in the read itself (best effort: they
	 * sleep in poll otherwise). */
	c->cli.blocking =
		mp_sock_blocking_reads(c->cli.link.fd, MP_READ_WAIT_MS) == 0;

	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	m.reqid = c->cli.hello_reqid = next_reqid(&c->cli);
	strcpy(m.name, c->pub->name);
	memcpy(m.id, c->cnx->id, sizeof(m.id));
	m.c = c->cnx->regno;
	m.u = mp_local_hello_token(c); /* "I use your segment" */
	/* A fresh socket has room for one small frame: a failure here means
	 * the link is already broken.  With TLS the send waits for the
	 * handshake: EACCES (certificate), EPROTO (not TLS) are said. */
	rc = mp_link_send_msg(&c->cli.link, &m, deadline);
	if (rc < 0) {
		link_gone(c, NULL);
		return rc == -EACCES || rc == -EPROTO ? rc : -ESRCH;
	}
	return 0;
}

int mp_cli_link(struct messip_channel_priv *c, int64_t deadline)
{
	struct sockaddr_storage sa;
	socklen_t salen;
	int rc;

	if (!c->cli.opened) {
		if (mp_sock_parse_addr(c->addr, &sa, &salen) < 0) {
			c->cli.opened = true;
			return -ESRCH;
		}
		rc = start_link(c, (struct sockaddr *)&sa, salen);
		if (rc < 0)
			return rc;
	}
	if (c->cli.link.fd < 0)
		return c->cli.refused ? -EACCES : -ESRCH;
	while (c->cli.connecting) {
		rc = mp_sock_connect_finish(c->cli.link.fd);
		if (rc == 0) {
			c->cli.connecting = false;
			break;
		}
		if (rc != -EINPROGRESS) {
			link_gone(c, NULL);
			return -ESRCH;
		}
		/* Still connecting: a call that times out here leaves the
		 * connect going for the next one. */
		rc = mp_sock_wait(c->cli.link.fd, POLLOUT, deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0) {
			link_gone(c, NULL);
			return -ESRCH;
		}
	}
	if (!c->cli.proving)
		return 0;
	/* A same-host client on the segment proves nothing here: its
	 * requests go through the segment (guarded by /dev/shm permissions),
	 * its link only says HELLO and BYE, and a buffered send must not
	 * wait for the server's receive loop to answer a CHALLENGE. */
	if (mp_local_cli_active(c)) {
		c->cli.proving = false;
		return send_hello(c, deadline);
	}
	rc = cli_prove(c, deadline);
	return rc < 0 ? rc : send_hello(c, deadline);
}

int mp_cli_open(struct messip_channel_priv *c, const struct sockaddr *sa,
		socklen_t salen, int64_t deadline)
{
	int rc = start_link(c, sa, salen);

	if (rc == 0)
		rc = mp_cli_link(c, deadline);
	if (rc < 0)
		mp_cli_defer(c); /* as if never opened */
	return rc;
}

void mp_cli_close(struct messip_channel_priv *c)
{
	struct mp_wire_msg m;

	if (c->cli.link.fd >= 0 && !c->cli.connecting && !c->cli.proving) {
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_BYE;
		mp_link_send_msg(&c->cli.link, &m, mp_time_now_ns());
	}
	mp_link_close(&c->cli.link);
}

/* Write what MESSIP_OPT_GATHER queued, before waiting for anything. */
static int cli_flush(struct messip_channel_priv *c, int64_t deadline)
{
	int rc = mp_link_flush(&c->cli.link, deadline);

	if (rc == -EPIPE) {
		link_gone(c, NULL);
		return -ESRCH;
	}
	return rc;
}

int mp_cli_post(struct messip_channel_priv *c, int32_t type,
		const struct iovec *iov, int iovcnt, uint32_t total,
		int64_t deadline, bool gather, uint32_t *reqid)
{
	struct mp_link *l = &c->cli.link;
	struct mp_wire_msg m;
	int rc;

	rc = mp_cli_link(c, deadline);
	if (rc < 0)
		return rc;
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_SEND;
	m.reqid = *reqid = next_reqid(&c->cli);
	m.a = type;
	m.datalen = total;
	if (gather && !c->cli.connecting && !c->cli.proving &&
	    l->out_len - l->out_off + total <= MP_GATHER_MAX &&
	    mp_link_queue(l, &m, iov, iovcnt) == 0) {
		/* A batch of MP_GATHER_BATCH bytes leaves at once, so the
		 * server works on it while more are posted; the rest waits
		 * for the next wait.  A partial write goes on later. */
		if (l->out_len - l->out_off >= MP_GATHER_BATCH &&
		    cli_flush(c, mp_time_now_ns()) == -ESRCH)
			return -ESRCH;
		return 0;
	}
	rc = mp_link_send(l, &m, iov, iovcnt, deadline);
	if (rc == -ETIMEDOUT)
		return rc; /* nothing left: the server never saw it */
	if (rc < 0) {
		link_gone(c, NULL);
		return -ESRCH;
	}
	return 0;
}

int mp_cli_wait_reply(struct messip_channel_priv *c, uint32_t reqid,
		      struct mp_wire_msg *m, int64_t deadline)
{
	int rc;

	if (c->cli.link.fd < 0)
		return -ESRCH;
	/* Gathered requests go first (the wait writes what is left) -
	 * unless the reply is already here: one look without waiting (past
	 * deadline, no spin) lets a window of requests keep gathering while
	 * replies come back in batches. */
	if (mp_link_pending_out(&c->cli.link)) {
		struct mp_spin_wait ws = {0, true, false, true, false};

		rc = cli_wait_loop(c, MP_OP_REPLY, reqid, m, 0, &ws, NULL);
		if (rc != -ETIMEDOUT)
			return rc;
		rc = cli_flush(c, 0);
		if (rc == -ESRCH)
			return rc;
	}
	return cli_wait(c, MP_OP_REPLY, reqid, m, deadline);
}

int mp_cli_drain(struct messip_channel_priv *c)
{
	/* slept: no spin (this is a look, not a wait). */
	struct mp_spin_wait ws = {0, true, false, true, false};
	struct mp_wire_msg m;
	int rc;

	if (c->cli.link.fd < 0)
		return -ESRCH;
	if (c->cli.connecting || c->cli.proving)
		return 0;
	if (mp_link_pending_out(&c->cli.link)) {
		rc = cli_flush(c, mp_time_now_ns());
		if (rc == -ESRCH)
			return rc; /* a partial write goes on next time */
	}
	/* reqid 0 is never used: every frame is filed or dropped, and the
	 * past deadline makes it one look (a zero poll). */
	rc = cli_wait_loop(c, MP_OP_REPLY, 0, &m, 0, &ws, NULL);
	return rc == -ETIMEDOUT ? 0 : rc;
}

void mp_cli_cancel(struct messip_channel_priv *c, uint32_t reqid)
{
	struct mp_wire_msg m;

	if (c->cli.link.fd < 0)
		return;
	c->cli.late_possible = true; /* its reply may be on its way */
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_CANCEL;
	m.reqid = reqid;
	if (mp_link_send_msg(&c->cli.link, &m, mp_time_now_ns()) == -EPIPE)
		link_gone(c, NULL);
}

static int cli_send(struct messip_channel_priv *c, int32_t type,
		    const struct iovec *iov, int iovcnt, uint32_t total,
		    int32_t *answer, const struct mp_iov_sink *sink,
		    int64_t deadline)
{
	struct mp_link_direct direct;
	struct mp_wire_msg m;
	int32_t stored = 0;
	bool use_direct;
	uint32_t reqid;
	int rc;

	rc = mp_cli_post(c, type, iov, iovcnt, total, deadline, false, &reqid);
	if (rc < 0)
		return rc;
	/* A large reply into a plain buffer is read straight into it, when
	 * nothing else can come first: the WELCOME was seen, and no earlier
	 * request timed out (its late reply could be on its way). */
	memset(&direct, 0, sizeof(direct));
	use_direct = !sink->iov && sink->maxlen >= MP_DIRECT_MIN &&
		     !c->cli.hello_reqid && !c->cli.late_possible &&
		     !c->cli.nreqs;
	if (use_direct) {
		direct.op = MP_OP_REPLY;
		direct.reqid = reqid;
		direct.dst = (uint8_t *)sink->buf;
		direct.cap = (uint32_t)sink->maxlen;
	}
	rc = cli_wait_into(c, MP_OP_REPLY, reqid, &m, deadline,
			   use_direct ? &direct : NULL);
	if (rc == -ETIMEDOUT || rc == -ENOMEM) {
		/* Withdraw it; its reply, if any, is dropped by reqid. */
		mp_cli_cancel(c, reqid);
		return rc;
	}
	if (rc < 0)
		return rc;
	if (direct.matched)
		stored = (int32_t)m.datalen; /* already in place */
	else
		rc = mp_iov_put(sink, m.data, m.datalen, &stored);
	if (rc < 0)
		return rc;
	if (answer)
		*answer = m.a;
	c->pub->datalen = (int32_t)m.datalen;
	c->pub->datalenr = stored;
	return 0;
}

static int send_common(messip_channel_t *ch, int32_t type,
		       const struct iovec *iov, int iovcnt, int32_t *answer,
		       void *reply_buffer, int reply_maxlen, int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_iov_sink sink = mp_iov_sink_buf(reply_buffer, reply_maxlen);
	int64_t total, deadline;
	int rc;

	if (!c || c->server)
		return mp_fail(-EINVAL);
	/* Buffered messages the library holds go before a blocking call. */
	mp_cnx_flush(c->cnx);
	rc = mp_iov_sink_check(&sink);
	if (rc < 0)
		return mp_fail(rc);
	total = mp_iov_total(iov, iovcnt, MP_MAX_DATA);
	if (total < 0)
		return mp_fail((int)total);
	deadline = mp_time_deadline(msec_timeout);
	if (mp_inproc_cli_active(c))
		rc = mp_inproc_send(c, type, iov, iovcnt, (uint32_t)total,
				    answer, &sink, deadline);
	else if ((rc = mp_local_cli_ready(c, msec_timeout)) == 0 &&
		 mp_local_cli_active(c))
		rc = mp_local_send(c, type, iov, iovcnt, (uint32_t)total,
				   answer, &sink, deadline);
	else if (rc == 0)
		rc = cli_send(c, type, iov, iovcnt, (uint32_t)total, answer,
			      &sink, deadline);
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	return rc < 0 ? mp_fail(rc) : 0;
}

MESSIP_EXPORT int messip_send(messip_channel_t *ch, int32_t type,
			      const void *send_buffer, int send_len,
			      int32_t *answer, void *reply_buffer,
			      int reply_maxlen, int msec_timeout)
{
	struct iovec v = {(void *)send_buffer, (size_t)send_len};

	if (send_len < 0 || (send_len > 0 && !send_buffer))
		return mp_fail(-EINVAL);
	if (send_len > MP_MAX_DATA)
		return mp_fail(-EMSGSIZE);
	return send_common(ch, type, &v, send_len ? 1 : 0, answer, reply_buffer,
			   reply_maxlen, msec_timeout);
}

MESSIP_EXPORT int messip_sendv(messip_channel_t *ch, int32_t type,
			       const struct iovec *iov, int iovcnt,
			       int32_t *answer, void *reply_buffer,
			       int reply_maxlen, int msec_timeout)
{
	return send_common(ch, type, iov, iovcnt, answer, reply_buffer,
			   reply_maxlen, msec_timeout);
}

MESSIP_EXPORT int messip_channel_ping(messip_channel_t *ch, int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	int64_t deadline = mp_time_deadline(msec_timeout);
	struct mp_wire_msg m;
	int rc;

	if (!c || c->server)
		return mp_fail(-EINVAL);
	mp_cnx_flush(c->cnx); /* as messip_send */
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_PING;
	rc = mp_inproc_cli_active(c) ? 0 : mp_local_cli_ready(c, msec_timeout);
	if (rc == 0 && (mp_inproc_cli_active(c) || mp_local_cli_active(c))) {
		rc = mp_inproc_cli_active(c) ? mp_inproc_ping(c, deadline)
					     : mp_local_ping(c, deadline);
		if (rc == -ETIMEDOUT) {
			errno = ETIMEDOUT;
			return MESSIP_MSG_TIMEOUT;
		}
		return rc < 0 ? mp_fail(rc) : 0;
	}
	if (rc == 0)
		rc = mp_cli_link(c, deadline);
	if (rc == 0) {
		m.reqid = next_reqid(&c->cli);
		rc = mp_link_send_msg(&c->cli.link, &m, deadline);
	}
	if (rc == -EPIPE) {
		link_gone(c, NULL);
		rc = -ESRCH;
	}
	if (rc == 0) {
		rc = cli_wait(c, MP_OP_PONG, m.reqid, &m, deadline);
		if (rc == -ETIMEDOUT)
			c->cli.late_possible = true; /* its PONG may come */
	}
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	return rc < 0 ? mp_fail(rc) : 0;
}

MESSIP_EXPORT int32_t messip_buffered_send(messip_channel_t *ch, int32_t type,
					   const void *send_buffer,
					   int send_len, int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct iovec v = {(void *)send_buffer, (size_t)send_len};
	struct mp_wire_msg req, ans;
	int64_t deadline;
	int rc;

	if (!c || send_len < 0 || (send_len > 0 && !send_buffer))
		return mp_fail(-EINVAL);
	if (send_len > MP_MAX_DATA)
		return mp_fail(-EMSGSIZE);
	if (mp_inproc_cli_active(c)) {
		rc = mp_inproc_bsend(c, type, send_buffer, (uint32_t)send_len,
				     msec_timeout);
		return rc < 0 ? mp_fail(rc) : rc;
	}
	if (!c->server) {
		rc = mp_local_cli_ready(c, msec_timeout);
		if (rc < 0)
			return mp_fail(rc);
		if (mp_local_cli_active(c)) {
			/* Same host: straight into the segment's ring (its
			 * deadline is only computed if the ring is full). */
			rc = mp_local_bsend(c, type, send_buffer,
					    (uint32_t)send_len, msec_timeout);
			return rc < 0 ? mp_fail(rc) : rc;
		}
	}
	deadline = mp_time_deadline(msec_timeout);
	for (;;) {
		unsigned epoch = c->cnx->epoch;
		int32_t handle;

		if (c->server)
			rc = c->handle < 0 ? -ESRCH : c->handle;
		else
			rc = mp_chan_cli_handle(c, deadline);
		if (rc < 0)
			return mp_fail(rc);
		handle = rc;
		if (mp_cnx_can_pipe(c->cnx, (uint32_t)send_len)) {
			/* Sent without waiting for the manager's answer: the
			 * library keeps it until the answer comes. */
			rc = mp_cnx_bsend(c->cnx, handle, type, send_buffer,
					  (uint32_t)send_len, deadline);
			if (rc != -EAGAIN)
				return rc < 0 ? mp_fail(rc) : rc;
		}
		/* A waiting BSEND must not queue behind pipelined ones parked
		 * at the manager: its ETIMEDOUT would not mean "not queued". */
		rc = mp_cnx_pipe_drain(c->cnx, deadline);
		if (rc < 0)
			return mp_fail(rc);
		memset(&req, 0, sizeof(req));
		req.op = MP_OP_BSEND;
		req.b = handle;
		req.a = type;
		req.c = mp_cnx_wait_field(deadline);
		req.datalen = (uint32_t)send_len;
		/* The manager enforces the deadline (it parks the request
		 * while the queue is full): wait a little longer for its
		 * verdict, so that ETIMEDOUT really means "not queued". */
		rc = mp_cnx_rpc(c->cnx, &req, &v, send_len ? 1 : 0, &ans,
				deadline, (int64_t)MP_BSEND_SLACK_MS * 1000000);
		/* Re-sent under a new registration (the manager restarted
		 * meanwhile) with the old handle: refused, so not queued;
		 * again with the channel declared anew. */
		if (rc == 0 && ans.a == EACCES && c->cnx->epoch != epoch &&
		    !c->server)
			continue;
		if (rc == 0)
			mp_cnx_bsend_answered(c->cnx, &ans);
		break;
	}
	if (rc == 0 && ans.a != 0)
		rc = (ans.a > 0 && ans.a < 4096) ? -ans.a : -EPROTO;
	if (rc < 0)
		return mp_fail(rc);
	return ans.b < 0 ? 0 : ans.b;
}
