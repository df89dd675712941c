/*
 * mp_async — asynchronous requests (see mp_async.h for the design and
 * the invariants).
 *
 * A request's reply lives in one of three places until it is collected:
 * still on the wire or in the segment (PENDING), in the link's input
 * buffer for the moment a wait reads it, or in the request itself (DONE):
 * a heap copy for a TCP reply filed by another wait, the slot's reply
 * area for a same-host one (the slot is held until collection).  A
 * request that moves to a reply_to queue, or whose segment is about to go,
 * takes a heap copy and gives its slot back first (own_reply).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "messip.h"
#include "mp_alloc.h"
#include "mp_async.h"
#include "mp_chan.h"
#include "mp_chseg.h"
#include "mp_cli.h"
#include "mp_export.h"
#include "mp_inproc.h"
#include "mp_iov.h"
#include "mp_local.h"
#include "mp_time.h"

#define MP_REQ_MAGIC   0x6d707271u
#define MP_R2S_LOOK_NS 1000000 /* receive looks for replies this often */

enum { RQ_PENDING, RQ_DONE, RQ_FAILED };

struct messip_request {
	uint32_t magic;
	struct messip_channel_priv *c; /* client handle; NULL once handed
					  to reply_to's queue */
	struct messip_request *next;   /* c's list, or reply_to's queue */
	uint32_t reqid;		       /* TCP */
	int state;		       /* RQ_* */
	int err;		       /* RQ_FAILED: -errno */
	int32_t answer;		       /* RQ_DONE */
	uint32_t rlen;
	void *reply; /* heap copy of the reply, or NULL */
	bool seg;    /* holds a slot of the segment: r */
	struct mp_chseg_req r;
	struct mp_inproc_req *ip; /* in-process: the mailbox's request (its
				     reply stays there until collected) */
	bool woken; /* ip with reply_to: its reply wakes reply_to's receive */
	struct messip_channel_priv *reply_to; /* return to sender, or NULL */
	void *cookie;
	messip_id_t srv_id; /* the server's id, for MESSIP_MSG_REPLY */
};

static struct messip_request *req_get(messip_request_t *q)
{
	return q && q->magic == MP_REQ_MAGIC ? q : NULL;
}

/* Put q at the end of the list head..tail. */
static void append(struct messip_request **head, struct messip_request **tail,
		   struct messip_request *q)
{
	q->next = NULL;
	if (*tail)
		(*tail)->next = q;
	else
		*head = q;
	*tail = q;
}

/* Unlink q from its handle's list (it is on it). */
static void unlink_req(struct messip_channel_priv *c, struct messip_request *q)
{
	struct messip_request **pp = &c->cli.reqs, *prev = NULL;

	while (*pp && *pp != q) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = q->next;
	if (c->cli.reqs_tail == q)
		c->cli.reqs_tail = prev;
	q->next = NULL;
	c->cli.nreqs--;
	if (q->reply_to)
		q->reply_to->srv.r2s_pending--;
}

/* A same-host request's reply (or its slot) leaves the segment: a heap
 * copy of a reply held, the slot given back.  A pending one is
 * withdrawn first (the segment is going, or the request moves). */
static void own_reply(struct messip_request *q, int fail)
{
	void *copy = NULL;

	if (!q->seg)
		return;
	if (q->state == RQ_PENDING) {
		int rc = mp_local_req_cancel(q->c, &q->r);

		if (rc != 1) {
			q->seg = false; /* released by the cancel */
			q->state = RQ_FAILED;
			q->err = fail;
			return;
		}
		q->state = RQ_DONE; /* the reply won: keep it */
	}
	if (q->state == RQ_DONE) {
		q->answer = q->r.answer;
		q->rlen = q->r.rlen;
		if (q->rlen) {
			copy = mp_alloc(q->rlen);
			if (copy)
				memcpy(copy, q->r.rdata, q->rlen);
		}
		if (q->rlen && !copy) {
			q->state = RQ_FAILED;
			q->err = -ENOMEM;
		}
		q->reply = copy;
		mp_local_req_done(q->c, &q->r);
	}
	q->seg = false;
}

static void req_free(struct messip_request *q)
{
	if (q->c) {
		unlink_req(q->c, q);
		if (q->seg && q->state == RQ_DONE)
			mp_local_req_done(q->c, &q->r);
	}
	if (q->ip)
		mp_inproc_req_drop(q->ip); /* withdrawn if still pending */
	free(q->reply);
	q->magic = 0;
	free(q);
}

bool mp_async_tcp_pending(const struct messip_channel_priv *c)
{
	for (struct messip_request *q = c->cli.reqs; q; q = q->next)
		if (!q->seg && !q->ip && q->state == RQ_PENDING)
			return true;
	return false;
}

bool mp_async_stash(struct messip_channel_priv *c, const struct mp_wire_msg *m)
{
	for (struct messip_request *q = c->cli.reqs; q; q = q->next) {
		if (q->seg || q->ip || q->state != RQ_PENDING ||
		    q->reqid != m->reqid)
			continue;
		q->answer = m->a;
		q->rlen = m->datalen;
		if (m->datalen) {
			q->reply = mp_alloc(m->datalen);
			if (!q->reply) {
				q->state = RQ_FAILED;
				q->err = -ENOMEM;
				return true;
			}
			memcpy(q->reply, m->data, m->datalen);
		}
		q->state = RQ_DONE;
		return true;
	}
	return false;
}

void mp_async_link_lost(struct messip_channel_priv *c)
{
	for (struct messip_request *q = c->cli.reqs; q; q = q->next) {
		if (q->seg) {
			own_reply(q, -ESRCH); /* the segment goes too */
		} else if (q->state == RQ_PENDING && !q->ip) {
			q->state = RQ_FAILED;
			q->err = -ESRCH;
		}
	}
}

/* Wait for a pending same-host request's reply (deadline 0: one look):
 * -ETIMEDOUT (still pending), else 0 with its outcome in q->state. */
static int seg_wait(struct messip_request *q, int64_t deadline)
{
	int rc = mp_local_req_wait(q->c, &q->r, deadline);

	if (rc == -ETIMEDOUT)
		return rc;
	if (rc < 0) {
		q->seg = false; /* released */
		q->state = RQ_FAILED;
		q->err = rc;
	} else {
		q->state = RQ_DONE;
	}
	return 0;
}

/* An in-process request about to move to a ready queue: -ETIMEDOUT
 * (no reply yet), else 0 with its outcome copied into q (the mailbox's
 * request is dropped). */
static int ip_settle(struct messip_request *q)
{
	const void *data = NULL;
	uint32_t len = 0;
	int rc = mp_inproc_req_wait(q->c, q->ip, 0, &q->answer, &data, &len);

	if (rc == -ETIMEDOUT)
		return rc;
	if (rc == 0 && len) {
		q->reply = mp_alloc(len);
		if (q->reply)
			memcpy(q->reply, data, len);
		else
			rc = -ENOMEM;
	}
	q->rlen = len;
	q->state = rc < 0 ? RQ_FAILED : RQ_DONE;
	q->err = rc;
	mp_inproc_req_drop(q->ip);
	q->ip = NULL;
	return 0;
}

/* Move c's finished requests for rt to rt's ready queue. */
static void move_ready(struct messip_channel_priv *c,
		       struct messip_channel_priv *rt)
{
	struct messip_request *q = c->cli.reqs, *next;

	for (; q; q = next) {
		next = q->next;
		if (q->reply_to != rt)
			continue;
		if (q->seg && seg_wait(q, 0) == -ETIMEDOUT)
			continue;
		if (q->ip && ip_settle(q) == -ETIMEDOUT)
			continue;
		if (q->state == RQ_PENDING)
			continue;
		own_reply(q, -ESRCH);
		unlink_req(c, q);
		memcpy(q->srv_id, c->pub->remote_id, sizeof(q->srv_id));
		q->c = NULL;
		append(&rt->srv.rq_head, &rt->srv.rq_tail, q);
	}
}

void mp_async_harvest(struct messip_channel_priv *rt)
{
	for (struct messip_channel_priv *c = rt->cnx->chans;
	     c && rt->srv.r2s_pending; c = c->next) {
		bool mine = false;

		if (c->server || !c->cli.nreqs)
			continue;
		for (struct messip_request *q = c->cli.reqs; q; q = q->next)
			mine |= q->reply_to == rt;
		if (!mine)
			continue;
		/* File what the link holds; a closed link fails them. */
		if (mp_async_tcp_pending(c) && mp_cli_drain(c) < 0)
			mp_async_link_lost(c);
		move_ready(c, rt);
	}
}

void mp_async_forget_last(struct messip_channel_priv *rt)
{
	if (rt->srv.rq_last) {
		req_free(rt->srv.rq_last);
		rt->srv.rq_last = NULL;
	}
}

int mp_async_take(struct messip_channel_priv *rt, int32_t *type,
		  const struct mp_iov_sink *sink, int *result)
{
	struct messip_request *q;
	messip_channel_t *pub = rt->pub;
	int32_t stored = 0;
	int rc;

	q = rt->srv.rq_head;
	if (!q)
		return MP_ASYNC_NOTHING;
	rc = mp_iov_put(sink, q->reply, q->state == RQ_DONE ? q->rlen : 0,
			&stored);
	if (rc < 0)
		return rc;
	rt->srv.rq_head = q->next;
	if (!rt->srv.rq_head)
		rt->srv.rq_tail = NULL;
	q->next = NULL;
	rt->srv.rq_last = q;
	*type = q->state == RQ_DONE ? q->answer : 0;
	memcpy(pub->remote_id, q->srv_id, sizeof(pub->remote_id));
	pub->datalen = q->state == RQ_DONE ? (int32_t)q->rlen : 0;
	pub->datalenr = stored;
	*result = MESSIP_MSG_REPLY;
	return 0;
}

int64_t mp_async_wait_bound(struct messip_channel_priv *rt, int64_t until)
{
	bool look = false;
	int64_t soon;

	/* In-process replies wake the receive (woken); the others are
	 * looked for now and then. */
	for (struct messip_channel_priv *c = rt->cnx->chans; c && !look;
	     c = c->next) {
		if (c->server)
			continue;
		for (struct messip_request *q = c->cli.reqs; q && !look;
		     q = q->next)
			look = q->reply_to == rt && !q->woken;
	}
	if (!look)
		return until;
	soon = mp_time_now_ns() + MP_R2S_LOOK_NS;
	return soon < until ? soon : until;
}

void mp_async_chan_gone(struct messip_channel_priv *c)
{
	if (!c->server) {
		while (c->cli.reqs) {
			struct messip_request *q = c->cli.reqs;

			if (q->seg && q->state == RQ_PENDING &&
			    mp_local_req_cancel(c, &q->r) != 1)
				q->seg = false; /* withdrawn, released */
			else if (q->seg)
				q->state = RQ_DONE; /* req_free releases */
			req_free(q);
		}
		return;
	}
	mp_async_forget_last(c);
	while (c->srv.rq_head) {
		struct messip_request *q = c->srv.rq_head;

		c->srv.rq_head = q->next;
		req_free(q);
	}
	c->srv.rq_tail = NULL;
	/* Requests still on their way here become ordinary ones: their
	 * clients collect them with messip_request_wait. */
	for (struct messip_channel_priv *k = c->cnx->chans; k; k = k->next) {
		if (k->server)
			continue;
		for (struct messip_request *q = k->cli.reqs; q; q = q->next)
			if (q->reply_to == c)
				q->reply_to = NULL;
	}
	c->srv.r2s_pending = 0;
}

/* ------------------------------------------------------------------ */
/* Public API.                                                         */

static messip_request_t *post(messip_channel_t *ch, int32_t type,
			      const struct iovec *iov, int iovcnt,
			      messip_channel_t *reply_to, void *cookie,
			      int msec_timeout)
{
	struct messip_channel_priv *c = mp_chan_get(ch), *rt = NULL;
	struct messip_request *q;
	int64_t total, deadline;
	int rc;

	if (!c || c->server)
		return mp_fail_ptr(-EINVAL);
	if (reply_to) {
		rt = mp_chan_get(reply_to);
		if (!rt || !rt->server || rt->cnx != c->cnx)
			return mp_fail_ptr(-EINVAL);
	}
	total = mp_iov_total(iov, iovcnt, MP_MAX_DATA);
	if (total < 0)
		return mp_fail_ptr((int)total);
	deadline = mp_time_deadline(msec_timeout);
	rc = mp_inproc_cli_active(c) ? 0 : mp_local_cli_ready(c, msec_timeout);
	if (rc < 0)
		return mp_fail_ptr(rc);
	q = mp_calloc(1, sizeof(*q));
	if (!q)
		return mp_fail_ptr(-ENOMEM);
	if (mp_inproc_cli_active(c)) {
		rc = mp_inproc_post(c, type, iov, iovcnt, (uint32_t)total, rt,
				    &q->ip);
		q->woken = rt && mp_inproc_notifies(rt);
	} else if (mp_local_cli_active(c)) {
		q->seg = true;
		rc = mp_local_post(c, type, iov, iovcnt, (uint32_t)total, &q->r,
				   deadline);
	} else {
		rc = mp_cli_post(c, type, iov, iovcnt, (uint32_t)total,
				 deadline, c->cli.gather, &q->reqid);
	}
	if (rc < 0) {
		free(q);
		return mp_fail_ptr(rc);
	}
	q->magic = MP_REQ_MAGIC;
	q->c = c;
	q->state = RQ_PENDING;
	q->reply_to = rt;
	q->cookie = cookie;
	append(&c->cli.reqs, &c->cli.reqs_tail, q);
	c->cli.nreqs++;
	if (rt)
		rt->srv.r2s_pending++;
	return q;
}

MESSIP_EXPORT messip_request_t *
messip_send_async(messip_channel_t *ch, int32_t type, const void *send_buffer,
		  int send_len, int msec_timeout)
{
	return messip_send_async_to(ch, type, send_buffer, send_len, NULL, NULL,
				    msec_timeout);
}

MESSIP_EXPORT messip_request_t *messip_sendv_async(messip_channel_t *ch,
						   int32_t type,
						   const struct iovec *iov,
						   int iovcnt, int msec_timeout)
{
	return post(ch, type, iov, iovcnt, NULL, NULL, msec_timeout);
}

MESSIP_EXPORT messip_request_t *
messip_send_async_to(messip_channel_t *ch, int32_t type,
		     const void *send_buffer, int send_len,
		     messip_channel_t *reply_to, void *cookie, int msec_timeout)
{
	struct iovec v = {(void *)send_buffer, (size_t)send_len};

	if (send_len < 0 || (send_len > 0 && !send_buffer))
		return mp_fail_ptr(-EINVAL);
	if (send_len > MP_MAX_DATA)
		return mp_fail_ptr(-EMSGSIZE);
	return post(ch, type, &v, send_len ? 1 : 0, reply_to, cookie,
		    msec_timeout);
}

/* q's reply, waiting up to deadline: 0 with *answer, *data, *len (valid
 * until q is freed or the link is read again), or -errno. */
static int req_reply(struct messip_request *q, int64_t deadline,
		     int32_t *answer, const void **data, uint32_t *len)
{
	struct messip_channel_priv *c = q->c;
	struct mp_wire_msg m;
	int rc;

	if (q->ip)
		return mp_inproc_req_wait(c, q->ip, deadline, answer, data,
					  len);
	if (q->state == RQ_PENDING && q->seg) {
		if (seg_wait(q, deadline) == -ETIMEDOUT)
			return -ETIMEDOUT;
	} else if (q->state == RQ_PENDING) {
		rc = mp_cli_wait_reply(c, q->reqid, &m, deadline);
		if (rc == -ETIMEDOUT)
			return rc;
		if (rc < 0)
			return rc;
		*answer = m.a;
		*data = m.data;
		*len = m.datalen;
		return 0;
	}
	if (q->state == RQ_FAILED)
		return q->err;
	*answer = q->seg ? q->r.answer : q->answer;
	*data = q->seg ? q->r.rdata : q->reply;
	*len = q->seg ? q->r.rlen : q->rlen;
	return 0;
}

MESSIP_EXPORT int messip_request_wait(messip_request_t *req, int32_t *answer,
				      void *reply_buffer, int reply_maxlen,
				      int msec_timeout)
{
	struct messip_request *q = req_get(req);
	struct mp_iov_sink sink = mp_iov_sink_buf(reply_buffer, reply_maxlen);
	const void *data = NULL;
	uint32_t len = 0;
	int32_t ans = 0, stored = 0;
	int rc;

	if (!q || !q->c || q->reply_to || mp_iov_sink_check(&sink) < 0)
		return mp_fail(-EINVAL);
	rc = req_reply(q, mp_time_deadline(msec_timeout), &ans, &data, &len);
	if (rc == -ETIMEDOUT) {
		errno = ETIMEDOUT;
		return MESSIP_MSG_TIMEOUT;
	}
	if (rc == 0)
		rc = mp_iov_put(&sink, data, len, &stored);
	if (rc == 0) {
		if (answer)
			*answer = ans;
		q->c->pub->datalen = (int32_t)len;
		q->c->pub->datalenr = stored;
	}
	req_free(q);
	return rc < 0 ? mp_fail(rc) : 0;
}

MESSIP_EXPORT int messip_request_cancel(messip_request_t *req)
{
	struct messip_request *q = req_get(req);
	struct messip_channel_priv *c;
	int rc;

	if (!q)
		return mp_fail(-EINVAL);
	c = q->c;
	if (!c)
		return 1; /* handed to reply_to already */
	if (q->ip) {
		if (mp_inproc_req_cancel(q->ip) == 1)
			return 1;
	} else if (q->state == RQ_PENDING && q->seg) {
		rc = mp_local_req_cancel(c, &q->r);
		if (rc == 1) {
			q->state = RQ_DONE;
			return 1;
		}
		q->seg = false; /* withdrawn (or the slot was reset) */
	} else if (q->state == RQ_PENDING) {
		/* A reply already read, or readable now, wins. */
		if (mp_cli_drain(c) < 0)
			mp_async_link_lost(c);
		if (q->state != RQ_PENDING)
			return 1;
		mp_cli_cancel(c, q->reqid);
	} else {
		return 1; /* its outcome is there: collect it */
	}
	req_free(q);
	return 0;
}

MESSIP_EXPORT void *messip_request_cookie(const messip_request_t *req)
{
	return req && req->magic == MP_REQ_MAGIC ? req->cookie : NULL;
}

MESSIP_EXPORT messip_request_t *messip_reply_request(messip_channel_t *ch,
						     void **cookie, int *status)
{
	struct messip_channel_priv *c = mp_chan_get(ch);
	struct messip_request *q;

	if (!c || !c->server || !c->srv.rq_last)
		return mp_fail_ptr(-EINVAL);
	q = c->srv.rq_last;
	if (cookie)
		*cookie = q->cookie;
	if (status)
		*status = q->state == RQ_DONE ? 0 : -q->err;
	return q;
}
