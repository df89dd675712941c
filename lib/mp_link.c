/*
 * mp_link — framed TCP connection (see mp_link.h).
 *
 * Invariants:
 *   - in_off <= in_len <= in_cap <= MP_LINK_FRAME_MAX(max_data);
 *   - bytes [in_off, in_len) are received but not yet decoded;
 *   - out != NULL exactly while committed bytes are unsent (a frame's
 *     tail, frames queued by mp_link_queue), and then every new frame
 *     waits behind them; out_off <= out_len <= out_cap.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mp_alloc.h"
#include "mp_link.h"
#include "mp_log.h"
#include "mp_sock.h"
#include "mp_time.h"

#define MP_LINK_INIT_CAP 4096
#define MP_LINK_FRAME_MAX(d)                                                   \
	((size_t)MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + (size_t)(d))
#define MP_LINK_IOV_MAX 64 /* header + up to 63 data pieces per sendmsg */

void mp_link_init(struct mp_link *l, int fd, uint32_t max_data)
{
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->max_data = max_data;
}

int mp_link_start_tls(struct mp_link *l, const char *host)
{
	struct mp_tls_ctx *ctx;
	char err[256];
	int rc;

	rc = host ? mp_tls_env_client(&ctx, err, sizeof(err))
		  : mp_tls_env_server(&ctx, err, sizeof(err));
	if (rc < 0) {
		mp_log(MESSIP_LOG_ERROR, "MESSIP-TLS-CONFIG", "%s", err);
		return rc;
	}
	if (!ctx)
		return 0;
	l->tls = mp_tls_new(ctx, l->fd, host);
	return l->tls ? 0 : -errno;
}

/* A TLS failure: say why (once: the link is unusable after it). */
static int tls_failed(struct mp_link *l, int rc)
{
	if ((rc == -EACCES || rc == -EPROTO) && !mp_tls_ready(l->tls))
		mp_log(MESSIP_LOG_ERROR,
		       rc == -EACCES ? "MESSIP-TLS-VERIFY" : "MESSIP-TLS",
		       "%s", mp_tls_why(l->tls));
	return rc;
}

/* What a wait for room must poll for. */
static short out_events(const struct mp_link *l)
{
	return l->tls ? mp_tls_events(l->tls) : POLLOUT;
}

void mp_link_drop_fd(struct mp_link *l)
{
	/* No I/O: freeing TLS state sends nothing. */
	mp_tls_free(l->tls);
	l->tls = NULL;
	l->fd = -1;
}

void mp_link_close(struct mp_link *l)
{
	mp_tls_free(l->tls);
	l->tls = NULL;
	if (l->fd >= 0)
		close(l->fd);
	free(l->in);
	free(l->out);
	mp_link_init(l, -1, l->max_data);
}

/* Make room for `need` contiguous bytes at in_len (need bounded by the
 * caller to one frame). */
static int reserve(struct mp_link *l, size_t need)
{
	size_t held = l->in_len - l->in_off;
	size_t cap;
	uint8_t *p;

	if (l->in_off && (l->in_cap - l->in_len < need || held == 0)) {
		memmove(l->in, l->in + l->in_off, held);
		l->in_off = 0;
		l->in_len = held;
	}
	if (l->in_cap - l->in_len >= need)
		return 0;
	cap = l->in_cap ? l->in_cap : MP_LINK_INIT_CAP;
	if (cap < l->in_hint)
		cap = l->in_hint;
	while (cap - l->in_len < need)
		cap *= 2;
	if (cap > MP_LINK_FRAME_MAX(l->max_data))
		cap = MP_LINK_FRAME_MAX(l->max_data);
	if (cap - l->in_len < need)
		return -EMSGSIZE;
	p = mp_realloc(l->in, cap);
	if (!p)
		return -ENOMEM;
	l->in = p;
	l->in_cap = cap;
	return 0;
}

static int fill(struct mp_link *l, int flags);

int mp_link_fill(struct mp_link *l)
{
	return fill(l, MSG_DONTWAIT);
}

int mp_link_fill_wait(struct mp_link *l)
{
	return fill(l, 0);
}

static int fill(struct mp_link *l, int flags)
{
	size_t held = l->in_len - l->in_off, want = MP_LINK_INIT_CAP / 2;
	struct mp_wire_hdr h;
	ssize_t n;
	int rc;

	if (l->fd < 0)
		return -EPIPE;
	/* Size the read by the frame being assembled, if its header is
	 * here: only then do we know (and have checked) how big it is. */
	rc = mp_wire_decode_hdr(l->in ? l->in + l->in_off : NULL, held,
				l->max_data, &h);
	if (rc < 0)
		return rc;
	if (rc > 0 && MP_WIRE_HDR_SIZE + (size_t)h.len > held)
		want = MP_WIRE_HDR_SIZE + (size_t)h.len - held;
	if (held >= MP_LINK_FRAME_MAX(l->max_data))
		return 0; /* a whole frame is waiting: decode it first */
	if (want > MP_LINK_FRAME_MAX(l->max_data) - held)
		want = MP_LINK_FRAME_MAX(l->max_data) - held;
	rc = reserve(l, want);
	if (rc < 0)
		return rc;
	if (l->tls) {
		n = mp_tls_read(l->tls, l->in + l->in_len,
				l->in_cap - l->in_len, flags);
		if (n < 0)
			return tls_failed(l, (int)n);
		l->in_len += (size_t)n;
		return (int)(n > INT_MAX ? INT_MAX : n);
	}
	do {
		n = recv(l->fd, l->in + l->in_len, l->in_cap - l->in_len,
			 flags);
	} while (n < 0 && errno == EINTR && (flags & MSG_DONTWAIT));
	if (n > 0) {
		l->in_len += (size_t)n;
		return (int)(n > INT_MAX ? INT_MAX : n);
	}
	if (n < 0 &&
	    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	return -EPIPE;
}

void *mp_link_steal_input(struct mp_link *l)
{
	void *p = l->in;

	if (!p || l->in_len != 0)
		return NULL;
	l->in_hint = l->in_cap;
	l->in = NULL;
	l->in_cap = 0;
	return p;
}

/* Bytes of op's frame before its data, or 0 if op has a variable-length
 * field before the data (or is unknown). */
static size_t direct_head(unsigned op)
{
	struct mp_wire_msg m;
	uint8_t buf[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX];
	int n;

	if (mp_wire_fields(op) & (MP_WF_NAME | MP_WF_ID | MP_WF_ADDR))
		return 0;
	memset(&m, 0, sizeof(m));
	m.op = (uint8_t)op;
	n = mp_wire_encode_head(&m, buf, sizeof(buf));
	return n > 0 ? (size_t)n : 0;
}

/* Append n bytes to the input buffer. */
static int push_input(struct mp_link *l, const uint8_t *p, size_t n)
{
	int rc = reserve(l, n);

	if (rc < 0)
		return rc;
	memcpy(l->in + l->in_len, p, n);
	l->in_len += n;
	return 0;
}

/*
 * A read of n bytes landed as head bytes in the input buffer and n - head
 * in d->dst: is it the awaited frame?  Sort the bytes out either way.
 */
static int direct_sort(struct mp_link *l, struct mp_link_direct *d, size_t head,
		       size_t n)
{
	uint8_t tmp[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX];
	size_t extra = n - head;
	struct mp_wire_hdr h;
	uint32_t fixed_len;
	int rc;

	l->in_len = head;
	rc = mp_wire_decode_hdr(l->in, head, l->max_data, &h);
	if (rc < 0)
		return rc;
	fixed_len = (uint32_t)(head - MP_WIRE_HDR_SIZE);
	if (h.op != d->op || h.reqid != d->reqid || h.len < fixed_len ||
	    h.len - fixed_len > d->cap)
		return push_input(l, d->dst, extra);
	/* Decode the fields through the codec: the header with a length
	 * that stops where the data starts. */
	memcpy(tmp, l->in, head);
	tmp[8] = (uint8_t)(fixed_len >> 24);
	tmp[9] = (uint8_t)(fixed_len >> 16);
	tmp[10] = (uint8_t)(fixed_len >> 8);
	tmp[11] = (uint8_t)fixed_len;
	rc = mp_wire_decode(tmp, head, l->max_data, &d->m);
	if (rc < 0)
		return rc;
	if (rc != (int)head)
		return -EPROTO;
	d->m.datalen = h.len - fixed_len;
	d->m.data = d->dst;
	d->matched = true;
	l->in_off = l->in_len = 0;
	if (extra > d->m.datalen) {
		/* Frames behind it came along: they belong to the buffer. */
		rc = push_input(l, d->dst + d->m.datalen, extra - d->m.datalen);
		if (rc < 0)
			return rc;
		extra = d->m.datalen;
	}
	d->got = (uint32_t)extra;
	return 0;
}

int mp_link_fill_direct(struct mp_link *l, struct mp_link_direct *d, bool wait)
{
	int flags = wait ? 0 : MSG_DONTWAIT;
	size_t head = direct_head(d->op);
	struct iovec v[2];
	struct msghdr mh = {.msg_iov = v, .msg_iovlen = 2};
	ssize_t n;
	int rc;

	if (l->fd < 0)
		return -EPIPE;
	if (l->tls)
		return fill(l, flags); /* the bytes are only in TLS's buffer */
	if (d->matched) {
		if (d->got >= d->m.datalen)
			return 0;
		v[0].iov_base = d->dst + d->got;
		v[0].iov_len = d->m.datalen - d->got;
		mh.msg_iovlen = 1;
	} else {
		if (!head || mp_link_has_input(l) || !d->cap)
			return fill(l, flags);
		l->in_off = l->in_len = 0;
		rc = reserve(l, head);
		if (rc < 0)
			return rc;
		v[0].iov_base = l->in;
		v[0].iov_len = head;
		v[1].iov_base = d->dst;
		/* No frame's data is longer: what is read stays within one
		 * frame's worth of input buffer if it must go there. */
		v[1].iov_len = d->cap < l->max_data ? d->cap : l->max_data;
	}
	do {
		n = recvmsg(l->fd, &mh, flags);
	} while (n < 0 && errno == EINTR && !wait);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
		       errno != EINTR))
		return -EPIPE;
	if (n < 0)
		return 0;
	if (d->matched) {
		d->got += (uint32_t)n;
	} else if ((size_t)n < head) {
		l->in_len = (size_t)n; /* a piece of a header: the usual way */
	} else {
		rc = direct_sort(l, d, head, (size_t)n);
		if (rc < 0)
			return rc;
	}
	return (int)(n > INT_MAX ? INT_MAX : n);
}

bool mp_link_frame_ready(const struct mp_link *l)
{
	size_t held = l->in_len - l->in_off;
	struct mp_wire_hdr h;
	int rc;

	if (l->tls && mp_tls_has_input(l->tls))
		return true;
	if (held < MP_WIRE_HDR_SIZE)
		return false;
	rc = mp_wire_decode_hdr(l->in + l->in_off, held, l->max_data, &h);
	return rc < 0 || MP_WIRE_HDR_SIZE + (size_t)h.len <= held;
}

int mp_link_next(struct mp_link *l, struct mp_wire_msg *m)
{
	int rc;

	if (!mp_link_has_input(l))
		return 0;
	rc = mp_wire_decode(l->in + l->in_off, l->in_len - l->in_off,
			    l->max_data, m);
	if (rc <= 0)
		return rc;
	l->in_off += (size_t)rc;
	if (l->in_off == l->in_len)
		l->in_off = l->in_len = 0; /* data stays readable: no move */
	return 1;
}

/* Keep the unsent part of iov[0..cnt) (skipping `done` bytes) aside. */
static int stash(struct mp_link *l, const struct iovec *iov, int cnt,
		 size_t done, size_t total)
{
	size_t left = total - done, pos = 0;
	uint8_t *p = mp_alloc(left);

	if (!p)
		return -ENOMEM;
	for (int i = 0; i < cnt; i++) {
		const uint8_t *b = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		if (done >= len) {
			done -= len;
			continue;
		}
		memcpy(p + pos, b + done, len - done);
		pos += len - done;
		done = 0;
	}
	l->out = p;
	l->out_off = 0;
	l->out_len = l->out_cap = left;
	return 0;
}

/* sendmsg once (or hand the bytes to TLS); bytes written, 0 if the
 * socket is full, -EPIPE (or TLS's -EACCES, -EPROTO, -ENOMEM). */
static ssize_t send_some(struct mp_link *l, struct iovec *iov, int cnt)
{
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
	ssize_t n;

	if (l->tls) {
		n = mp_tls_write(l->tls, iov, cnt);
		return n < 0 ? tls_failed(l, (int)n) : n;
	}
	do {
		n = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
		return 0;
	return -EPIPE;
}

/* Advance an iovec array past n bytes; returns the new start index. */
static int iov_advance(struct iovec *iov, int cnt, int i, size_t n)
{
	while (i < cnt && n >= iov[i].iov_len) {
		n -= iov[i].iov_len;
		i++;
	}
	if (i < cnt && n) {
		iov[i].iov_base = (uint8_t *)iov[i].iov_base + n;
		iov[i].iov_len -= n;
	}
	return i;
}

int mp_link_flush(struct mp_link *l, int64_t deadline)
{
	while (mp_link_pending_out(l)) {
		struct iovec v = {l->out + l->out_off, l->out_len - l->out_off};
		ssize_t n;
		int rc;

		if (l->fd < 0)
			return -EPIPE;
		if (v.iov_len) {
			n = send_some(l, &v, 1);
			if (n < 0)
				return (int)n;
			l->out_off += (size_t)n;
		} else {
			/* Only TLS's ciphertext is left. */
			rc = mp_tls_flush(l->tls);
			if (rc < 0)
				return rc;
			n = rc == 0;
		}
		if (n > 0)
			continue;
		rc = mp_sock_wait(l->fd, out_events(l), deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0 || (rc & (POLLERR | POLLNVAL)))
			return -EPIPE;
	}
	free(l->out);
	l->out = NULL;
	l->out_off = l->out_len = l->out_cap = 0;
	return 0;
}

int mp_link_queue(struct mp_link *l, const struct mp_wire_msg *m,
		  const struct iovec *iov, int iovcnt)
{
	uint8_t head[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX];
	size_t total, need, pos;
	int rc;

	if (l->fd < 0)
		return -EPIPE;
	if (iovcnt < 0 || iovcnt > MP_LINK_IOV_MAX - 1)
		return -EINVAL;
	rc = mp_wire_encode_head(m, head, sizeof(head));
	if (rc < 0)
		return rc;
	total = (size_t)rc;
	for (int k = 0; k < iovcnt; k++)
		total += iov[k].iov_len;
	if (total - (size_t)rc != m->datalen)
		return -EINVAL;
	if (l->out_off) {
		/* Written already: make room at the front. */
		memmove(l->out, l->out + l->out_off, l->out_len - l->out_off);
		l->out_len -= l->out_off;
		l->out_off = 0;
	}
	need = l->out_len + total;
	if (need > l->out_cap) {
		size_t cap = l->out_cap ? l->out_cap * 2 : MP_LINK_INIT_CAP;
		uint8_t *p;

		while (cap < need)
			cap *= 2;
		p = mp_realloc(l->out, cap);
		if (!p)
			return -ENOMEM;
		l->out = p;
		l->out_cap = cap;
	}
	pos = l->out_len;
	memcpy(l->out + pos, head, (size_t)rc);
	pos += (size_t)rc;
	for (int k = 0; k < iovcnt; k++) {
		if (iov[k].iov_len)
			memcpy(l->out + pos, iov[k].iov_base, iov[k].iov_len);
		pos += iov[k].iov_len;
	}
	l->out_len = pos;
	return 0;
}

/* Write v[0..cnt) (total bytes; orig is a copy of v) as one committed
 * unit: 0, -ETIMEDOUT (nothing written by the deadline), -EPIPE. */
static int send_vec(struct mp_link *l, struct iovec *v, const struct iovec *orig,
		    int cnt, size_t total, int64_t deadline)
{
	size_t done = 0;
	int i = 0, rc;

	for (;;) {
		ssize_t n = send_some(l, v + i, cnt - i);

		if (n < 0)
			return (int)n;
		done += (size_t)n;
		if (done == total)
			return 0;
		i = iov_advance(v, cnt, i, (size_t)n);
		if (n > 0)
			continue;
		rc = mp_sock_wait(l->fd, out_events(l), deadline);
		if (rc < 0 || (rc > 0 && (rc & (POLLERR | POLLNVAL))))
			return -EPIPE;
		if (rc == 0) {
			if (done == 0)
				return -ETIMEDOUT;
			/* Half a frame is out: commit the rest. */
			return stash(l, orig, cnt, done, total);
		}
	}
}

int mp_link_send(struct mp_link *l, const struct mp_wire_msg *m,
		 const struct iovec *iov, int iovcnt, int64_t deadline)
{
	uint8_t head[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX];
	struct iovec v[MP_LINK_IOV_MAX], orig[MP_LINK_IOV_MAX];
	size_t total;
	int cnt = 0, rc;

	if (l->fd < 0)
		return -EPIPE;
	if (iovcnt < 0 || iovcnt > MP_LINK_IOV_MAX - 1)
		return -EINVAL;
	rc = mp_link_flush(l, deadline);
	if (rc < 0)
		return rc;
	rc = mp_wire_encode_head(m, head, sizeof(head));
	if (rc < 0)
		return rc;
	v[cnt].iov_base = head;
	v[cnt++].iov_len = (size_t)rc;
	total = (size_t)rc;
	for (int k = 0; k < iovcnt; k++) {
		if (!iov[k].iov_len)
			continue;
		v[cnt++] = iov[k];
		total += iov[k].iov_len;
	}
	if (total - (size_t)rc != m->datalen)
		return -EINVAL;
	memcpy(orig, v, sizeof(v[0]) * (size_t)cnt);
	return send_vec(l, v, orig, cnt, total, deadline);
}

int mp_link_send_raw(struct mp_link *l, const void *p, size_t n,
		     int64_t deadline)
{
	struct iovec v = {(void *)p, n}, orig = v;
	int rc;

	if (l->fd < 0)
		return -EPIPE;
	rc = mp_link_flush(l, deadline);
	if (rc < 0)
		return rc;
	return n ? send_vec(l, &v, &orig, 1, n, deadline) : 0;
}

int mp_link_send_msg(struct mp_link *l, const struct mp_wire_msg *m,
		     int64_t deadline)
{
	struct mp_wire_msg copy = *m;

	copy.datalen = 0;
	return mp_link_send(l, &copy, NULL, 0, deadline);
}

int mp_link_recv(struct mp_link *l, struct mp_wire_msg *m, int64_t deadline)
{
	for (;;) {
		int rc = mp_link_next(l, m);

		if (rc != 0)
			return rc;
		rc = mp_link_fill(l);
		if (rc < 0)
			return rc;
		if (rc > 0)
			continue;
		/* TLS: its own output (a handshake step) goes out here. */
		if (l->tls && mp_tls_flush(l->tls) < 0)
			return -EPIPE;
		rc = mp_sock_wait(l->fd,
				  POLLIN | (l->tls && mp_tls_pending_out(l->tls)
						    ? POLLOUT
						    : 0),
				  deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return -EPIPE;
	}
}
