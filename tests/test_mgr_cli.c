/*
 * test_mgr_cli — raw protocol client for manager tests (see header).
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp_mgrproc.h"
#include "mp_time.h"
#include "test_mgr_cli.h"

#define IN_CAP (MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + TCLI_DATA_MAX + 4096)

int tcli_open(struct tcli *c, int port)
{
	memset(c, 0, sizeof(*c));
	c->next_reqid = 1;
	c->in = malloc(IN_CAP);
	if (!c->in)
		return -ENOMEM;
	c->fd = mp_tcp_connect_local(port);
	if (c->fd < 0) {
		int rc = c->fd;

		free(c->in);
		c->in = NULL;
		return rc;
	}
	return 0;
}

void tcli_msg_free(struct tcli_msg *t)
{
	if (t) {
		free(t->data);
		free(t);
	}
}

void tcli_close(struct tcli *c)
{
	while (c->queue) {
		struct tcli_msg *t = c->queue;

		c->queue = t->next;
		tcli_msg_free(t);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->in);
	c->in = NULL;
}

int tcli_send_raw(struct tcli *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int tcli_send(struct tcli *c, struct mp_wire_msg *m)
{
	static uint8_t buf[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX +
			   TCLI_DATA_MAX];
	int n, rc;

	if (!m->reqid && m->op != MP_OP_BACK)
		m->reqid = c->next_reqid++;
	n = mp_wire_encode(m, buf, sizeof(buf));
	if (n < 0)
		return n;
	rc = tcli_send_raw(c, buf, (size_t)n);
	return rc < 0 ? rc : (int)m->reqid;
}

/* Decode one frame from the buffer into a new tcli_msg.  1 got one, 0
 * need more, -EPROTO. */
static int take_frame(struct tcli *c, struct tcli_msg **out)
{
	struct tcli_msg *t;
	struct mp_wire_msg m;
	int n = mp_wire_decode(c->in, c->inlen, TCLI_DATA_MAX, &m);

	if (n == 0)
		return 0;
	if (n < 0)
		return -EPROTO;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->m = m;
	if (m.datalen) {
		t->data = malloc(m.datalen);
		if (!t->data) {
			free(t);
			return -ENOMEM;
		}
		memcpy(t->data, m.data, m.datalen);
	}
	t->m.data = t->data;
	memmove(c->in, c->in + n, c->inlen - (size_t)n);
	c->inlen -= (size_t)n;
	*out = t;
	return 1;
}

/* Read one frame from the socket (not the queue). */
static int read_frame(struct tcli *c, struct tcli_msg **out, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int rc = take_frame(c, out);
		ssize_t n;

		if (rc != 0)
			return rc < 0 ? rc : 0;
		rc = poll(&pfd, 1, mp_time_left_ms(deadline));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc == 0)
			return -ETIMEDOUT;
		n = recv(c->fd, c->in + c->inlen, IN_CAP - c->inlen, 0);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -ECONNRESET;
		}
		c->inlen += (size_t)n;
	}
}

static void enqueue(struct tcli *c, struct tcli_msg *t)
{
	t->next = NULL;
	if (c->qtail)
		c->qtail->next = t;
	else
		c->queue = t;
	c->qtail = t;
}

/* First queued frame matching (op or reqid), removed from the queue. */
static struct tcli_msg *dequeue(struct tcli *c, int op, int reqid)
{
	struct tcli_msg **pp = &c->queue, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->next) {
		struct tcli_msg *t = *pp;

		if ((op < 0 || t->m.op == op) &&
		    (reqid < 0 || (int)t->m.reqid == reqid)) {
			*pp = t->next;
			if (c->qtail == t)
				c->qtail = prev;
			return t;
		}
	}
	return NULL;
}

static int recv_match(struct tcli *c, int op, int reqid,
		      struct tcli_msg **out, int timeout_ms)
{
	int64_t deadline = mp_time_deadline(timeout_ms);
	struct tcli_msg *t = dequeue(c, op, reqid);

	if (t) {
		*out = t;
		return 0;
	}
	for (;;) {
		int rc = read_frame(c, &t, deadline);

		if (rc < 0)
			return rc;
		if ((op < 0 || t->m.op == op) &&
		    (reqid < 0 || (int)t->m.reqid == reqid)) {
			*out = t;
			return 0;
		}
		enqueue(c, t);
	}
}

int tcli_recv(struct tcli *c, struct tcli_msg **out, int timeout_ms)
{
	return recv_match(c, -1, -1, out, timeout_ms);
}

int tcli_recv_op(struct tcli *c, int op, struct tcli_msg **out,
		 int timeout_ms)
{
	return recv_match(c, op, -1, out, timeout_ms);
}

int tcli_call(struct tcli *c, struct mp_wire_msg *m, struct tcli_msg **out,
	      int timeout_ms)
{
	int reqid = tcli_send(c, m);

	if (reqid < 0)
		return reqid;
	return recv_match(c, -1, reqid, out, timeout_ms);
}

int tcli_wait_closed(struct tcli *c, int timeout_ms)
{
	int64_t deadline = mp_time_deadline(timeout_ms);

	for (;;) {
		struct tcli_msg *t;
		int rc = read_frame(c, &t, deadline);

		if (rc == -ECONNRESET)
			return 0;
		if (rc == -ETIMEDOUT)
			return -ETIMEDOUT;
		if (rc == -EPROTO) {
			c->inlen = 0;
			continue;
		}
		if (rc == 0)
			tcli_msg_free(t);
	}
}

/* Call and return the answer's a (status), the transport error, or
 * -EBADMSG when the answer is not of the expected operation. */
static int call_status(struct tcli *c, struct mp_wire_msg *m, int op,
		       struct tcli_msg **out, int timeout_ms)
{
	struct tcli_msg *t;
	int rc = tcli_call(c, m, &t, timeout_ms);

	if (rc < 0)
		return rc;
	if (t->m.op != op) {
		tcli_msg_free(t);
		return -EBADMSG;
	}
	rc = t->m.a;
	if (out)
		*out = t;
	else
		tcli_msg_free(t);
	return rc;
}

int tcli_hello(struct tcli *c, int port, const char *id, uint64_t token)
{
	struct mp_wire_msg m = { .op = MP_OP_HELLO };
	struct tcli_msg *t;
	int rc;

	if (port > 0) {
		rc = tcli_open(c, port);
		if (rc < 0)
			return rc;
	}
	snprintf(m.id, sizeof(m.id), "%s", id);
	m.a = (int32_t)getpid();
	m.u = token;
	rc = call_status(c, &m, MP_OP_WELCOME, &t, 5000);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		c->regno = t->m.b;
		c->token = t->m.u;
	}
	tcli_msg_free(t);
	return rc;
}

int tcli_create(struct tcli *c, const char *name, int32_t cap,
		int32_t *handle)
{
	struct mp_wire_msg m = { .op = MP_OP_CH_CREATE };
	struct tcli_msg *t;
	int rc;

	snprintf(m.name, sizeof(m.name), "%s", name);
	snprintf(m.addr, sizeof(m.addr), "127.0.0.1:1");
	m.a = cap;
	m.u = 42;
	rc = call_status(c, &m, MP_OP_RESULT, &t, 5000);
	if (rc < 0)
		return rc;
	if (handle)
		*handle = t->m.b;
	tcli_msg_free(t);
	return rc;
}

int tcli_delete(struct tcli *c, const char *name, int32_t *nclients)
{
	struct mp_wire_msg m = { .op = MP_OP_CH_DELETE };
	struct tcli_msg *t;
	int rc;

	snprintf(m.name, sizeof(m.name), "%s", name);
	rc = call_status(c, &m, MP_OP_RESULT, &t, 5000);
	if (rc < 0)
		return rc;
	if (nclients)
		*nclients = t->m.b;
	tcli_msg_free(t);
	return rc;
}

int tcli_connect(struct tcli *c, const char *name, int locate_ms,
		 int32_t *handle, int timeout_ms)
{
	struct mp_wire_msg m = { .op = MP_OP_CH_CONNECT };
	struct tcli_msg *t;
	int rc;

	snprintf(m.name, sizeof(m.name), "%s", name);
	if (locate_ms >= -1) {
		m.flags = MP_WIRE_F_LOCATE;
		m.a = locate_ms;
	}
	rc = call_status(c, &m, MP_OP_CH_INFO, &t, timeout_ms);
	if (rc < 0)
		return rc;
	if (handle)
		*handle = t->m.b;
	tcli_msg_free(t);
	return rc;
}

int tcli_disconnect(struct tcli *c, int32_t handle)
{
	struct mp_wire_msg m = { .op = MP_OP_CH_DISCONNECT };

	m.b = handle;
	return call_status(c, &m, MP_OP_RESULT, NULL, 5000);
}

int tcli_bsend(struct tcli *c, int32_t handle, int32_t type, const void *d,
	       uint32_t len, int32_t wait_ms, int32_t *queued, int timeout_ms)
{
	struct mp_wire_msg m = { .op = MP_OP_BSEND };
	struct tcli_msg *t;
	int rc;

	m.b = handle;
	m.a = type;
	m.c = wait_ms;
	m.data = d;
	m.datalen = len;
	rc = call_status(c, &m, MP_OP_RESULT, &t, timeout_ms);
	if (rc < 0)
		return rc;
	if (queued)
		*queued = t->m.b;
	tcli_msg_free(t);
	return rc;
}

int tcli_back(struct tcli *c, int32_t handle, uint64_t seq)
{
	struct mp_wire_msg m = { .op = MP_OP_BACK };

	m.b = handle;
	m.u = seq;
	return tcli_send(c, &m) < 0 ? -EIO : 0;
}

int tcli_ping(struct tcli *c)
{
	struct mp_wire_msg m = { .op = MP_OP_PING };
	struct tcli_msg *t;
	int rc = tcli_call(c, &m, &t, 5000);

	if (rc < 0)
		return rc;
	rc = t->m.op == MP_OP_PONG ? 0 : -EBADMSG;
	tcli_msg_free(t);
	return rc;
}

int tcli_bye(struct tcli *c)
{
	struct mp_wire_msg m = { .op = MP_OP_BYE };

	return call_status(c, &m, MP_OP_RESULT, NULL, 5000);
}
