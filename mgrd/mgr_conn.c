/*
 * mgr_conn — a worker's client connection (see mgr_conn.h).
 *
 * Invariants: in.off <= in.len <= in.cap and out.off <= out.len <=
 * out.cap; consumed space at the front is reclaimed before a buffer grows,
 * so a buffer never exceeds the largest amount of live data it held.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mgr_conn.h"
#include "mp_alloc.h"

#define IN_INITIAL  4096
#define OUT_INITIAL 4096

struct mgr_conn *mgr_conn_new(int fd, const char *peer)
{
	struct mgr_conn *c = mp_calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if (mgr_sec_tls()) {
		c->tls = mp_tls_new(mgr_sec_tls(), fd, NULL);
		if (!c->tls) {
			free(c);
			return NULL;
		}
	}
	c->fd = fd;
	c->reg = -1;
	c->park_slot = -1;
	c->peer_idx = -1;
	c->out_hard = MGR_OUT_HARD;
	/* Without a secret there is nothing to prove. */
	c->authed = mgr_sec_key() == NULL;
	snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "?");
	return c;
}

void mgr_conn_free(struct mgr_conn *c)
{
	if (!c)
		return;
	mp_tls_free(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	free(c->in.p);
	free(c->out.p);
	free(c->links);
	for (uint32_t i = 0; i < c->nsrv; i++)
		free(c->srv[i]);
	free(c->srv);
	free(c);
}

/* Make room for `need` more bytes after len, reclaiming the consumed front
 * first and growing up to max (0: no limit).  0 or -ENOBUFS / -ENOMEM. */
static int buf_room(struct mgr_buf *b, size_t need, size_t initial,
		    size_t max)
{
	size_t live = b->len - b->off, cap;
	uint8_t *p;

	if (b->cap - b->len >= need)
		return 0;
	if (b->off) {
		memmove(b->p, b->p + b->off, live);
		b->off = 0;
		b->len = live;
		if (b->cap - b->len >= need)
			return 0;
	}
	if (max && live + need > max)
		return -ENOBUFS;
	cap = b->cap ? b->cap : initial;
	while (cap < live + need)
		cap *= 2;
	if (max && cap > max)
		cap = max;
	p = mp_realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int mgr_conn_read(struct mgr_conn *c, size_t limit)
{
	size_t want;
	ssize_t n;
	int rc;

	/* Read in chunks of up to 64 KiB, never holding more than limit. */
	if (mgr_conn_in_avail(c) >= limit)
		return -ENOBUFS;
	want = limit - mgr_conn_in_avail(c);
	if (want > 65536)
		want = 65536;
	rc = buf_room(&c->in, want, IN_INITIAL, limit);
	if (rc < 0)
		return rc;
	if (c->tls) {
		n = mp_tls_read(c->tls, c->in.p + c->in.len, want,
				MSG_DONTWAIT);
		if (n == 0)
			return -EAGAIN;
		if (n == -EPIPE && mp_tls_eof(c->tls))
			return 0;
		if (n < 0)
			return (int)n;
	} else {
		n = recv(c->fd, c->in.p + c->in.len, want, 0);
		if (n < 0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
	c->in.len += (size_t)n;
	return (int)n;
}

void mgr_conn_consume(struct mgr_conn *c, size_t n)
{
	if (n > mgr_conn_in_avail(c))
		n = mgr_conn_in_avail(c);
	c->in.off += n;
	if (c->in.off == c->in.len)
		c->in.off = c->in.len = 0;
}

void mgr_conn_cut(struct mgr_conn *c, size_t at, size_t n)
{
	size_t avail = mgr_conn_in_avail(c);
	uint8_t *base = c->in.p + c->in.off;

	if (at >= avail)
		return;
	if (n > avail - at)
		n = avail - at;
	memmove(base + at, base + at + n, avail - at - n);
	c->in.len -= n;
}

uint8_t *mgr_conn_out_reserve(struct mgr_conn *c, size_t n)
{
	if (mgr_conn_out_pending(c) + n > c->out_hard)
		return NULL;
	if (buf_room(&c->out, n, OUT_INITIAL, 0) < 0)
		return NULL;
	return c->out.p + c->out.len;
}

void mgr_conn_out_commit(struct mgr_conn *c, size_t n)
{
	c->out.len += n;
}

int mgr_conn_send(struct mgr_conn *c, const struct mp_wire_msg *m)
{
	size_t size = mp_wire_size(m);
	uint8_t *p;
	int n;

	if (size == 0)
		return -EINVAL;
	p = mgr_conn_out_reserve(c, size);
	if (!p)
		return -ENOBUFS;
	n = mp_wire_encode(m, p, size);
	if (n < 0)
		return n;
	mgr_conn_out_commit(c, (size_t)n);
	return 0;
}

/* One write of pending output: bytes taken (> 0), 0 when the socket
 * (or TLS) takes nothing now, -errno. */
static ssize_t write_some(struct mgr_conn *c)
{
	if (c->tls) {
		struct iovec v = {c->out.p + c->out.off,
				  mgr_conn_out_pending(c)};

		return mp_tls_write(c->tls, &v, 1);
	}
	for (;;) {
		ssize_t n = send(c->fd, c->out.p + c->out.off,
				 mgr_conn_out_pending(c), MSG_NOSIGNAL);

		if (n >= 0)
			return n;
		if (errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int mgr_conn_flush(struct mgr_conn *c, int64_t now_ns)
{
	size_t before = mgr_conn_out_pending(c);
	int rc = 0;

	while (mgr_conn_out_pending(c) && rc == 0) {
		ssize_t n = write_some(c);

		if (n < 0)
			return (int)n;
		if (n == 0)
			rc = 1;
		c->out.off += (size_t)n;
	}
	/* TLS: the ciphertext of what it took may still wait. */
	if (rc == 0 && c->tls)
		rc = mp_tls_flush(c->tls);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		/* The stall clock runs from the last write that made
		 * progress. */
		if (!c->stall_ns || mgr_conn_out_pending(c) < before)
			c->stall_ns = now_ns;
		return 1;
	}
	c->out.off = c->out.len = 0;
	c->stall_ns = 0;
	/* A burst may have grown the buffer; give the memory back once the
	 * peer has caught up. */
	if (c->out.cap > 4 * MGR_OUT_HIGH) {
		free(c->out.p);
		c->out.p = NULL;
		c->out.cap = 0;
	}
	return 0;
}

int mgr_conn_link_find(const struct mgr_conn *c, int slot)
{
	for (uint32_t i = 0; i < c->nlinks; i++)
		if (c->links[i].slot == slot)
			return (int)i;
	return -1;
}

int mgr_conn_link_add(struct mgr_conn *c, int slot, uint32_t gen)
{
	int i = mgr_conn_link_find(c, slot);

	if (i >= 0) {
		c->links[i].gen = gen;
		return 0;
	}
	if (c->nlinks == c->caplinks) {
		uint32_t cap = c->caplinks ? 2 * c->caplinks : 4;
		struct mgr_chref *p = mp_realloc(c->links, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		c->links = p;
		c->caplinks = cap;
	}
	c->links[c->nlinks].slot = slot;
	c->links[c->nlinks].gen = gen;
	c->nlinks++;
	return 0;
}

void mgr_conn_link_del(struct mgr_conn *c, int idx)
{
	if (idx < 0 || (uint32_t)idx >= c->nlinks)
		return;
	c->links[idx] = c->links[--c->nlinks];
}

int mgr_conn_srv_find(const struct mgr_conn *c, int slot)
{
	for (uint32_t i = 0; i < c->nsrv; i++)
		if (c->srv[i]->slot == slot)
			return (int)i;
	return -1;
}

struct mgr_srvch *mgr_conn_srv_add(struct mgr_conn *c, int slot,
				   uint32_t gen)
{
	struct mgr_srvch *s;
	int i = mgr_conn_srv_find(c, slot);

	if (i >= 0)
		mgr_conn_srv_del(c, i);
	if (c->nsrv == c->capsrv) {
		uint32_t cap = c->capsrv ? 2 * c->capsrv : 4;
		struct mgr_srvch **p = mp_realloc(c->srv, cap * sizeof(*p));

		if (!p)
			return NULL;
		c->srv = p;
		c->capsrv = cap;
	}
	s = mp_calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->slot = slot;
	s->gen = gen;
	c->srv[c->nsrv++] = s;
	return s;
}

void mgr_conn_srv_del(struct mgr_conn *c, int idx)
{
	if (idx < 0 || (uint32_t)idx >= c->nsrv)
		return;
	free(c->srv[idx]);
	c->srv[idx] = c->srv[--c->nsrv];
}
