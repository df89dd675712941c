/*
 * mp_chan — channel handles (see mp_chan.h).
 *
 * Invariants: a handle is one allocation (struct mp_chan_block) whose
 * public half's priv points at its private half and back; mp_chan_get()
 * checks both links and the magic before anything is used, and the magic
 * is cleared when the handle is freed.  A live handle is on exactly one
 * connection's list.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "messip.h"
#include "mp_async.h"
#include "mp_alloc.h"
#include "mp_chan.h"
#include "mp_cli.h"
#include "mp_cnx.h"
#include "mp_export.h"
#include "mp_host.h"
#include "mp_inproc.h"
#include "mp_local.h"
#include "mp_log.h"
#include "mp_srv.h"
#include "mp_time.h"

#define MP_LOCATE_SLACK_MS 1000 /* the manager answers LOCATE at its deadline  \
				 */

struct mp_chan_block {
	messip_channel_t pub;
	struct messip_channel_priv priv;
};

struct messip_channel_priv *mp_chan_get(messip_channel_t *ch)
{
	struct messip_channel_priv *c;

	if (!ch || !ch->priv)
		return NULL;
	c = ch->priv;
	if (c->magic != MP_CH_MAGIC || c->pub != ch)
		return NULL;
	return c;
}

int mp_chan_check_name(const char *name)
{
	size_t n;

	if (!name)
		return -EINVAL;
	n = strnlen(name, MESSIP_CHANNEL_NAME_MAXLEN + 1);
	if (n == 0)
		return -EINVAL;
	return n > MESSIP_CHANNEL_NAME_MAXLEN ? -ENAMETOOLONG : 0;
}

static struct messip_channel_priv *chan_new(struct messip_cnx *cnx,
					    const char *name, bool server)
{
	struct mp_chan_block *b = mp_calloc(1, sizeof(*b));
	struct messip_channel_priv *c;

	if (!b)
		return NULL;
	c = &b->priv;
	b->pub.priv = c;
	c->pub = &b->pub;
	c->magic = MP_CH_MAGIC;
	c->cnx = cnx;
	c->server = server;
	c->handle = -1;
	c->epoch = cnx->epoch;
	c->srv.epfd = c->srv.lfd = c->srv.wakefd = c->srv.mgr_fd = -1;
	mp_link_init(&c->cli.link, -1, MP_MAX_DATA);
	strcpy(b->pub.name, name); /* length checked by the caller */
	return c;
}

/* Free a handle that is on no list. */
static void chan_free(struct messip_channel_priv *c)
{
	mp_async_chan_gone(c); /* before its segment and link go */
	mp_local_close(c); /* first: its helper thread uses the epoll */
	mp_inproc_close(c);
	if (c->server)
		mp_srv_close(c);
	else
		mp_cli_close(c);
	mp_auth_key_clear(&c->ticket);
	c->magic = 0;
	free(c->pub); /* the block starts with pub */
}

void mp_chan_destroy(struct messip_channel_priv *c)
{
	mp_cnx_remove_chan(c->cnx, c);
	chan_free(c);
}

size_t mp_chan_ticket_iov(struct messip_channel_priv *c, struct iovec *iov)
{
	iov->iov_base = c->ticket.k;
	iov->iov_len = c->ticket.len;
	return c->ticket.len;
}

int mp_chan_take_ticket(struct messip_channel_priv *c,
			const struct mp_wire_msg *ans)
{
	if (ans->datalen != MP_AUTH_NONCE ||
	    mp_auth_key_set(&c->ticket, ans->data, ans->datalen) < 0)
		return -EPROTO;
	return 0;
}

static int status_rc(int32_t a)
{
	return (a > 0 && a < 4096) ? -a : -EPROTO;
}

static int chan_create(struct messip_cnx *cnx, const char *name, int32_t maxbuf,
		       int64_t deadline, struct messip_channel_priv **out)
{
	struct messip_channel_priv *c;
	struct mp_wire_msg req, ans;
	uint8_t ticket[MP_AUTH_NONCE];
	struct iovec tiov;
	int lfd, rc;

	rc = mp_cnx_wait_up(cnx, deadline);
	if (rc < 0)
		return rc;
	if (!cnx->my_host && mp_host_token(&cnx->my_host) < 0)
		cnx->my_host = 0; /* no same-host fast path: TCP only */
	c = chan_new(cnx, name, true);
	if (!c)
		return -ENOMEM;
	lfd = mp_sock_listen_local(mp_cnx_fd(cnx), c->addr, sizeof(c->addr));
	if (lfd < 0) {
		chan_free(c);
		return lfd;
	}
	rc = mp_srv_open(c, lfd, maxbuf);
	if (rc < 0) {
		chan_free(c);
		return rc;
	}
	/* The in-process mailbox (keyed by the plain address), then the
	 * same-host segment, advertised in c->addr; without them the
	 * channel is simply TCP only. */
	mp_inproc_srv_open(c, maxbuf);
	mp_local_srv_open(c, maxbuf);
	/* The channel ticket: only clients the manager lets connect get
	 * it, and a direct link must prove it (mp_srv.c). */
	rc = mp_auth_nonce(ticket, sizeof(ticket));
	if (rc == 0)
		rc = mp_auth_key_set(&c->ticket, ticket, sizeof(ticket));
	if (rc < 0) {
		chan_free(c);
		return rc;
	}
	memset(&req, 0, sizeof(req));
	req.op = MP_OP_CH_CREATE;
	strcpy(req.name, name);
	req.a = maxbuf;
	strcpy(req.addr, c->addr);
	req.u = cnx->my_host;
	req.datalen = (uint32_t)mp_chan_ticket_iov(c, &tiov);
	rc = mp_cnx_rpc(cnx, &req, &tiov, 1, &ans, deadline, 0);
	if (rc == 0 && ans.a != 0)
		rc = status_rc(ans.a);
	if (rc < 0) {
		chan_free(c);
		return rc;
	}
	c->handle = ans.b;
	c->gen = ans.u;
	c->epoch = cnx->epoch;
	mp_cnx_add_chan(cnx, c);
	*out = c;
	return 0;
}

MESSIP_EXPORT messip_channel_t *
messip_channel_create(messip_cnx_t *handle, const char *name, int msec_timeout,
		      int32_t maxnb_msg_buffered)
{
	struct messip_cnx *cnx = mp_cnx_get(handle);
	struct messip_channel_priv *c = NULL;
	int rc;

	if (!cnx || maxnb_msg_buffered < 0)
		return mp_fail_ptr(-EINVAL);
	rc = mp_chan_check_name(name);
	if (rc == 0)
		rc = chan_create(cnx, name, maxnb_msg_buffered,
				 mp_time_deadline(msec_timeout), &c);
	if (rc < 0)
		return mp_fail_ptr(rc);
	mp_log(MESSIP_LOG_INFO, "MESSIP-CHANNEL-CREATED",
	       "channel %s created at %s (handle %d)", name, c->addr,
	       (int)c->handle);
	return c->pub;
}

MESSIP_EXPORT int messip_channel_delete(messip_channel_t *ch, int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_wire_msg req, ans;
	int rc;

	if (!c)
		return mp_fail(-EINVAL);
	if (!c->server)
		return mp_fail(-EPERM);
	memset(&req, 0, sizeof(req));
	req.op = MP_OP_CH_DELETE;
	strcpy(req.name, ch->name);
	rc = mp_cnx_rpc(c->cnx, &req, NULL, 0, &ans,
			mp_time_deadline(msec_timeout), 0);
	if (rc == 0 && ans.a != 0)
		rc = status_rc(ans.a);
	if (rc < 0)
		return mp_fail(rc);
	if (ans.b > 0)
		return ans.b; /* clients still connected: nothing deleted */
	mp_chan_destroy(c);
	return 0;
}

/* The existing client handle for name on cnx, if any. */
static struct messip_channel_priv *find_client(struct messip_cnx *cnx,
					       const char *name)
{
	for (struct messip_channel_priv *c = cnx->chans; c; c = c->next)
		if (!c->server && strcmp(c->pub->name, name) == 0)
			return c;
	return NULL;
}

static int chan_connect(struct messip_cnx *cnx, const char *name, bool locate,
			int64_t deadline, struct messip_channel_priv **out)
{
	struct messip_channel_priv *c = find_client(cnx, name);
	struct sockaddr_storage sa;
	struct mp_wire_msg req, ans;
	socklen_t salen;
	bool fresh = !c;
	pid_t srv_pid;
	int rc;

	if (c && c->cli.opened && mp_cli_usable(c) && !mp_local_cli_gone(c)) {
		c->cli.refs++;
		*out = c;
		return 0;
	}
	/* New, not used yet (so nothing tells whether its server is still
	 * there), or the old link died (server gone): ask the manager again
	 * and keep the same handle. */
	memset(&req, 0, sizeof(req));
	req.op = MP_OP_CH_CONNECT;
	strcpy(req.name, name);
	if (locate) {
		req.flags = MP_WIRE_F_LOCATE;
		req.a = mp_cnx_wait_field(deadline);
	}
	rc = mp_cnx_rpc(cnx, &req, NULL, 0, &ans, deadline,
			locate ? (int64_t)MP_LOCATE_SLACK_MS * 1000000 : 0);
	if (rc < 0)
		return rc;
	if (ans.a != 0)
		return status_rc(ans.a);
	srv_pid = mp_local_split_addr(ans.addr); /* "ip:port/pid" */
	if (ans.op != MP_OP_CH_INFO || ans.datalen != MP_AUTH_NONCE ||
	    mp_sock_parse_addr(ans.addr, &sa, &salen) < 0)
		return -EPROTO;
	if (fresh) {
		c = chan_new(cnx, name, false);
		if (!c)
			return -ENOMEM;
	}
	mp_chan_take_ticket(c, &ans); /* its size was checked above */
	snprintf(c->addr, sizeof(c->addr), "%s", ans.addr);
	/* The direct link waits for the first send or ping (mp_cli.h): a
	 * look-up is this one manager round trip, and the address was
	 * checked above.  A client that the server must know at once opens
	 * it here with mp_cli_open() instead (on failure undoing the
	 * manager's record with a CH_DISCONNECT).  The same-host path opens
	 * it at its first use, before any slot is used (mp_local_cli_ready):
	 * that HELLO is how the server counts its local clients. */
	mp_cli_defer(c);
	mp_local_cli_prepare(c, srv_pid, ans.u); /* ENOMEM: TCP only */
	mp_inproc_cli_prepare(c); /* a server of this process: mailbox */
	c->handle = ans.b;
	c->epoch = cnx->epoch;
	c->cli.server_regno = ans.c;
	c->cli.server_host = ans.u;
	memset(c->pub->remote_id, 0, sizeof(c->pub->remote_id));
	memcpy(c->pub->remote_id, ans.id, MESSIP_MAXLEN_ID);
	c->cli.refs++;
	if (fresh)
		mp_cnx_add_chan(cnx, c);
	*out = c;
	return 0;
}

int mp_chan_cli_handle(struct messip_channel_priv *c, int64_t deadline)
{
	struct messip_cnx *cnx = c->cnx;
	struct mp_wire_msg req, ans;
	int64_t until;
	int rc;

	rc = mp_cnx_wait_up(cnx, deadline); /* re-declares after a restart */
	if (rc < 0)
		return rc;
	if (c->handle >= 0 && c->epoch == cnx->epoch)
		return c->handle;
	if (!c->relocate_by || mp_time_now_ns() >= c->relocate_by) {
		c->relocate_by = 0;
		return -ESRCH; /* lost with an expired registration */
	}
	/* The server has not declared its channel to the new manager yet
	 * (it notices the restart only when it next calls the library):
	 * wait for the name, within the window and the caller's deadline. */
	memset(&req, 0, sizeof(req));
	req.op = MP_OP_CH_CONNECT;
	req.flags = MP_WIRE_F_LOCATE;
	strcpy(req.name, c->pub->name);
	until = deadline < c->relocate_by ? deadline : c->relocate_by;
	req.a = mp_cnx_wait_field(until);
	rc = mp_cnx_rpc(cnx, &req, NULL, 0, &ans, until,
			(int64_t)MP_LOCATE_SLACK_MS * 1000000);
	if (rc < 0 && rc != -ETIMEDOUT)
		return rc;
	if (rc == -ETIMEDOUT || ans.a == ETIMEDOUT) {
		if (mp_time_now_ns() < c->relocate_by)
			return -ETIMEDOUT; /* the caller's deadline */
		c->relocate_by = 0;
		return -ESRCH;
	}
	c->relocate_by = 0;
	if (ans.a != 0 || ans.op != MP_OP_CH_INFO ||
	    mp_chan_take_ticket(c, &ans) < 0)
		return -ESRCH;
	/* As when the channels are declared again at once: the name, not
	 * the server's address, identifies the channel (a proxy or a NAT
	 * may show one server under several addresses). */
	c->handle = ans.b;
	c->epoch = cnx->epoch;
	c->cli.server_regno = ans.c;
	return c->handle;
}

static messip_channel_t *connect_common(messip_cnx_t *handle, const char *name,
					int msec_timeout, bool locate)
{
	struct messip_cnx *cnx = mp_cnx_get(handle);
	struct messip_channel_priv *c = NULL;
	int rc;

	if (!cnx)
		return mp_fail_ptr(-EINVAL);
	rc = mp_chan_check_name(name);
	if (rc == 0)
		rc = chan_connect(cnx, name, locate,
				  mp_time_deadline(msec_timeout), &c);
	if (rc < 0)
		return mp_fail_ptr(rc);
	return c->pub;
}

MESSIP_EXPORT messip_channel_t *
messip_channel_connect(messip_cnx_t *cnx, const char *name, int msec_timeout)
{
	return connect_common(cnx, name, msec_timeout, false);
}

MESSIP_EXPORT messip_channel_t *
messip_channel_locate(messip_cnx_t *cnx, const char *name, int msec_timeout)
{
	return connect_common(cnx, name, msec_timeout, true);
}

MESSIP_EXPORT int messip_channel_disconnect(messip_channel_t *ch,
					    int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct mp_wire_msg req, ans;

	if (!c || c->server)
		return mp_fail(-EINVAL);
	if (--c->cli.refs > 0)
		return MESSIP_OK;
	if (c->handle >= 0 && c->epoch == c->cnx->epoch) {
		/* The manager tells the server (DISCONNECT, once).  Waiting
		 * for its answer makes the event certain to be queued
		 * before this returns; with a zero timeout it is only sent. */
		memset(&req, 0, sizeof(req));
		req.op = MP_OP_CH_DISCONNECT;
		req.b = c->handle;
		if (msec_timeout == 0) {
			req.reqid = mp_cnx_reqid(c->cnx);
			mp_cnx_post(c->cnx, &req);
		} else {
			mp_cnx_rpc(c->cnx, &req, NULL, 0, &ans,
				   mp_time_deadline(msec_timeout), 0);
		}
	}
	mp_chan_destroy(c);
	return MESSIP_OK;
}
