/*
 * mp_cli — client side of a channel (see mp_cli.h).
 *
 * Invariants: at most one synchronous request of this handle is waited
 * for at a time (the handle is used by one thread at a time), so any
 * REPLY or PONG that is not the awaited one is stale and dropped; once the
 * link is closed (fd -1) it stays closed and every call reports ESRCH.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <string.h>

#include "messip.h"
#include "mp_chan.h"
#include "mp_cli.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_iov.h"
#include "mp_log.h"
#include "mp_time.h"

#define MP_BSEND_SLACK_MS 2000 /* the manager answers BSEND at its deadline */

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

/*
 * Wait for the frame op/reqid from the server, servicing the manager link
 * meanwhile.  0 (m filled; its data valid until the next read), -ETIMEDOUT,
 * -ESRCH (link closed), -EPROTO.
 */
static int cli_wait(struct messip_channel_priv *c, unsigned op, uint32_t reqid,
		    struct mp_wire_msg *m, int64_t deadline)
{
	struct messip_cnx *cnx = c->cnx;
	struct mp_link *l = &c->cli.link;
	bool waited = false, try_read = mp_link_has_input(l);
	int rc;

	for (;;) {
		struct pollfd p[2];
		int64_t now, until;
		int n = 1;

		while ((rc = mp_link_next(l, m)) > 0) {
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
			if (m->op != MP_OP_REPLY && m->op != MP_OP_PONG) {
				link_gone(c, "unexpected frame from server");
				return -EPROTO;
			}
			/* A late reply: its request timed out. */
		}
		if (rc < 0) {
			link_gone(c, "bad frame from server");
			return -EPROTO;
		}
		/* Right after a send the answer cannot be there yet: wait
		 * first, read when poll says so (one syscall less). */
		if (try_read) {
			rc = mp_link_fill(l);
			if (rc < 0) {
				link_gone(c, rc == -EPIPE ? NULL : "bad frame");
				return rc == -EPIPE ? -ESRCH : -EPROTO;
			}
			if (rc > 0)
				continue;
		}
		try_read = true;
		now = mp_time_now_ns();
		if (waited && now >= deadline)
			return -ETIMEDOUT;
		p[0].fd = l->fd;
		p[0].events = POLLIN;
		if (mp_cnx_fd(cnx) >= 0) {
			p[1].fd = mp_cnx_fd(cnx);
			p[1].events = mp_cnx_poll_events(cnx);
			n = 2;
		}
		until = mp_cnx_wake_time(cnx);
		if (until > deadline)
			until = deadline;
		rc = poll(p, (nfds_t)n, mp_time_left_ms(until));
		waited = true;
		if (rc < 0 && errno != EINTR)
			return -errno;
		if ((rc > 0 && n == 2 && p[1].revents) ||
		    mp_cnx_wake_time(cnx) <= mp_time_now_ns())
			mp_cnx_pump(cnx);
	}
}

int mp_cli_open(struct messip_channel_priv *c, const struct sockaddr *sa,
		socklen_t salen, int64_t deadline)
{
	struct mp_wire_msg m;
	int fd, rc;

	fd = mp_sock_connect(sa, salen, deadline);
	if (fd < 0)
		return fd == -ETIMEDOUT ? -ETIMEDOUT : -ESRCH;
	mp_link_init(&c->cli.link, fd, MP_MAX_DATA);
	/* HELLO is pipelined: the WELCOME is checked by the first wait
	 * (cli_wait), so connecting never depends on the server being in
	 * its receive loop right now. */
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_HELLO;
	m.reqid = c->cli.hello_reqid = next_reqid(&c->cli);
	strcpy(m.name, c->pub->name);
	memcpy(m.id, c->cnx->id, sizeof(m.id));
	m.c = c->cnx->regno;
	rc = mp_link_send_msg(&c->cli.link, &m, deadline);
	if (rc < 0) {
		mp_link_close(&c->cli.link);
		return rc == -ETIMEDOUT ? rc : -ESRCH;
	}
	return 0;
}

void mp_cli_close(struct messip_channel_priv *c)
{
	struct mp_wire_msg m;

	if (c->cli.link.fd >= 0) {
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_BYE;
		mp_link_send_msg(&c->cli.link, &m, mp_time_now_ns());
	}
	mp_link_close(&c->cli.link);
}

static int cli_send(struct messip_channel_priv *c, int32_t type,
		    const struct iovec *iov, int iovcnt, uint32_t total,
		    int32_t *answer, const struct mp_iov_sink *sink,
		    int64_t deadline)
{
	struct mp_wire_msg m;
	int32_t stored = 0;
	uint32_t reqid;
	int rc;

	if (c->cli.link.fd < 0)
		return -ESRCH;
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_SEND;
	m.reqid = reqid = next_reqid(&c->cli);
	m.a = type;
	m.datalen = total;
	rc = mp_link_send(&c->cli.link, &m, iov, iovcnt, deadline);
	if (rc == -ETIMEDOUT)
		return rc; /* nothing left: the server never saw it */
	if (rc < 0) {
		link_gone(c, NULL);
		return -ESRCH;
	}
	rc = cli_wait(c, MP_OP_REPLY, reqid, &m, deadline);
	if (rc == -ETIMEDOUT) {
		/* Withdraw it; its reply, if any, is dropped by reqid. */
		memset(&m, 0, sizeof(m));
		m.op = MP_OP_CANCEL;
		m.reqid = reqid;
		if (mp_link_send_msg(&c->cli.link, &m, mp_time_now_ns()) ==
		    -EPIPE)
			link_gone(c, NULL);
		return -ETIMEDOUT;
	}
	if (rc < 0)
		return rc;
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
	int64_t total;
	int rc;

	if (!c || c->server)
		return mp_fail(-EINVAL);
	rc = mp_iov_sink_check(&sink);
	if (rc < 0)
		return mp_fail(rc);
	total = mp_iov_total(iov, iovcnt, MP_MAX_DATA);
	if (total < 0)
		return mp_fail((int)total);
	rc = cli_send(c, type, iov, iovcnt, (uint32_t)total, answer, &sink,
		      mp_time_deadline(msec_timeout));
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
	if (c->cli.link.fd < 0)
		return mp_fail(-ESRCH);
	memset(&m, 0, sizeof(m));
	m.op = MP_OP_PING;
	m.reqid = next_reqid(&c->cli);
	rc = mp_link_send_msg(&c->cli.link, &m, deadline);
	if (rc == -EPIPE) {
		link_gone(c, NULL);
		rc = -ESRCH;
	}
	if (rc == 0)
		rc = cli_wait(c, MP_OP_PONG, m.reqid, &m, deadline);
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
	int64_t deadline = mp_time_deadline(msec_timeout);
	struct iovec v = {(void *)send_buffer, (size_t)send_len};
	struct mp_wire_msg req, ans;
	int rc;

	if (!c || send_len < 0 || (send_len > 0 && !send_buffer))
		return mp_fail(-EINVAL);
	if (send_len > MP_MAX_DATA)
		return mp_fail(-EMSGSIZE);
	if (c->handle < 0)
		return mp_fail(-ESRCH); /* lost with an expired registration */
	memset(&req, 0, sizeof(req));
	req.op = MP_OP_BSEND;
	req.b = c->handle;
	req.a = type;
	req.c = mp_cnx_wait_field(deadline);
	req.datalen = (uint32_t)send_len;
	/* The manager enforces the deadline (it parks the request while the
	 * queue is full): wait a little longer for its verdict, so that
	 * ETIMEDOUT really means "not queued". */
	rc = mp_cnx_rpc(c->cnx, &req, &v, send_len ? 1 : 0, &ans, deadline,
			(int64_t)MP_BSEND_SLACK_MS * 1000000);
	if (rc == 0 && ans.a != 0)
		rc = (ans.a > 0 && ans.a < 4096) ? -ans.a : -EPROTO;
	if (rc < 0)
		return mp_fail(rc);
	return ans.b < 0 ? 0 : ans.b;
}
