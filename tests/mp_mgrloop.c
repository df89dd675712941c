/*
 * mp_mgrloop — a manager worker played in-process (see mp_mgrloop.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mgr_log.h"
#include "mp_mgrloop.h"
#include "mp_shm.h"
#include "mp_time.h"

int mp_mgrloop_start(struct mp_mgrloop *h, const char *name)
{
	struct mgr_worker *w = &h->w;
	int rc;

	memset(h, 0, sizeof(*h));
	mgr_config_defaults(&h->cfg);
	h->cfg.workers = 1;
	h->cfg.max_channels = 8;
	h->cfg.max_connections = 16;
	h->cfg.max_links = 32;
	h->cfg.ring_memory = 1 << 20;
	h->cfg.max_message_size = 4096;
	h->cfg.default_buffered = 4;
	h->cfg.log_level = MGR_LOG_ERROR;
	mgr_log_setup(MGR_LOG_ERROR, MGR_LOG_STDERR);
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->efd < 0)
		return -errno;
	rc = mgr_state_create(&h->st, &h->cfg, h->name, &h->efd, NULL);
	if (rc < 0)
		goto fail_efd;
	rc = mgr_state_attach_worker(&h->st, 0, &h->cfg);
	if (rc < 0)
		goto fail_st;
	w->index = 0;
	w->cfg = h->cfg;
	w->st = &h->st;
	w->lfd = -1;
	w->efd = h->efd;
	w->spare_fd = -1;
	w->master_pid = getppid();
	w->now = mp_time_now_ns();
	w->in_limit = mgr_worker_in_limit(&w->cfg);
	snprintf(w->host_token_str, sizeof(w->host_token_str), "0");
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		rc = -errno;
		goto fail_st;
	}
	/* Plain calloc: the harness's own memory is not under test. */
	w->reg_conn = calloc(h->st.lay.max_regs, sizeof(*w->reg_conn));
	h->snap_len = h->st.lay.off_rings;
	h->snap = malloc(h->snap_len);
	if (!w->reg_conn || !h->snap) {
		rc = -ENOMEM;
		free(w->reg_conn);
		free(h->snap);
		close(w->epfd);
		goto fail_st;
	}
	memcpy(h->snap, mp_shm_payload(&h->st.shm), h->snap_len);
	h->w0 = *w;
	for (int i = 0; i < MP_MGRLOOP_POOL; i++)
		h->pool[i].wfd = h->pool[i].pfd = -1;
	return 0;
fail_st:
	mgr_state_close(&h->st);
	mp_shm_unlink(h->name);
fail_efd:
	close(h->efd);
	return rc;
}

static void pair_close(struct mp_mgrloop_pair *p)
{
	char sink[4096];

	if (p->wfd >= 0)
		close(p->wfd);
	if (p->pfd >= 0) {
		/* Read what the worker wrote first: a socket closed with
		 * unread input resets its peer, and the manager holds the
		 * registration of a link that failed (protocol.md); a hang-up
		 * here is an orderly end. */
		while (recv(p->pfd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
		close(p->pfd);
	}
	p->wfd = p->pfd = -1;
	p->busy = p->burned = p->next_fd = p->unread = 0;
}

void mp_mgrloop_stop(struct mp_mgrloop *h)
{
	mgr_worker_close_all(&h->w, 1);
	for (int i = 0; i < MP_MGRLOOP_POOL; i++)
		pair_close(&h->pool[i]);
	free(h->w.reg_conn);
	free(h->snap);
	close(h->w.epfd);
	/* attach_worker disowned the handle: unlink by name. */
	mgr_state_close(&h->st);
	mp_shm_unlink(h->name);
	close(h->efd);
}

void mp_mgrloop_reset(struct mp_mgrloop *h)
{
	struct mgr_state *st = &h->st;
	struct mgr_conn **reg_conn = h->w.reg_conn;

	mgr_worker_close_all(&h->w, 1);
	memcpy(mp_shm_payload(&st->shm), h->snap, h->snap_len);
	memset(st->ringh_gen, 0, st->lay.max_channels * sizeof(*st->ringh_gen));
	memset(st->evblocked, 0, st->lay.max_channels);
	memset(st->wake, 0, sizeof(st->wake));
	st->self_hints = 0;
	st->self_epoch = __atomic_load_n(&st->workers[0].epoch,
					 __ATOMIC_ACQUIRE);
	memset(reg_conn, 0, st->lay.max_regs * sizeof(*reg_conn));
	/* The epoll set still holds the connections of pooled pairs (a
	 * registration lasts as long as its socket): start a new one. */
	close(h->w.epfd);
	h->w0.epfd = epoll_create1(EPOLL_CLOEXEC);
	h->w = h->w0;
	h->w.reg_conn = reg_conn;
	for (int i = 0; i < MP_MGRLOOP_POOL; i++)
		h->pool[i].next_fd = 0;
}

/* A new socketpair for place p. */
static int pair_open(struct mp_mgrloop_pair *p)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		       sv) < 0)
		return -errno;
	p->wfd = sv[0];
	p->pfd = sv[1];
	p->next_fd = 0;
	p->unread = 0;
	return 0;
}

int mp_mgrloop_connect(struct mp_mgrloop *h, struct mgr_conn **c)
{
	struct mp_mgrloop_pair *p = NULL;
	int wfd, rc;

	/* A pair to reuse, else an empty place. */
	for (int i = 0; i < MP_MGRLOOP_POOL && !p; i++)
		if (!h->pool[i].busy && h->pool[i].wfd >= 0)
			p = &h->pool[i];
	for (int i = 0; i < MP_MGRLOOP_POOL && !p; i++)
		if (h->pool[i].wfd < 0)
			p = &h->pool[i];
	if (!p)
		return -EMFILE;
	if (p->wfd < 0 && (rc = pair_open(p)) < 0)
		return rc;
	/* The worker's epoll set keeps a registration per (descriptor
	 * number, socket) until the socket closes, which a pooled one does
	 * not: each dup of it gets a number above the ones it had since
	 * the set was made, so that adding it again cannot collide.  Out
	 * of numbers: a new pair. */
	wfd = fcntl(p->wfd, F_DUPFD_CLOEXEC, p->next_fd);
	if (wfd < 0) {
		pair_close(p);
		if ((rc = pair_open(p)) < 0)
			return rc;
		wfd = fcntl(p->wfd, F_DUPFD_CLOEXEC, 0);
		if (wfd < 0)
			return -errno;
	}
	p->next_fd = wfd + 1;
	h->w.now = mp_time_now_ns();
	*c = mgr_worker_adopt(&h->w, wfd, "fuzz");
	if (!*c)
		return -ENOMEM;
	p->busy = 1;
	return p->pfd;
}

static struct mp_mgrloop_pair *pair_of(struct mp_mgrloop *h, int fd)
{
	for (int i = 0; i < MP_MGRLOOP_POOL; i++)
		if (h->pool[i].pfd == fd && h->pool[i].busy)
			return &h->pool[i];
	return NULL;
}

void mp_mgrloop_release(struct mp_mgrloop *h, int fd)
{
	struct mp_mgrloop_pair *p = pair_of(h, fd);

	if (!p)
		return;
	if (p->burned) {
		pair_close(p);
		return;
	}
	/* Whatever either side left unread must not reach the next user
	 * (the worker may have written to fd in any pass, so that side is
	 * always drained). */
	if (p->unread != 0)
		mp_mgrloop_drain(p->wfd, NULL, 0);
	mp_mgrloop_drain(p->pfd, NULL, 0);
	p->unread = 0;
	p->busy = 0;
}

int mp_mgrloop_hangup(struct mp_mgrloop *h, int fd, struct mgr_conn *c)
{
	struct mp_mgrloop_pair *p = pair_of(h, fd);

	if (p)
		pair_close(p);
	if (!c || !mp_mgrloop_alive(h, c))
		return 0;
	h->w.now = mp_time_now_ns();
	mgr_worker_serve(&h->w, c, EPOLLIN | EPOLLHUP | EPOLLRDHUP);
	mgr_worker_end_pass(&h->w, 0);
	return mp_mgrloop_alive(h, c);
}

int mp_mgrloop_alive(struct mp_mgrloop *h, const struct mgr_conn *c)
{
	for (const struct mgr_conn *x = h->w.conns; x; x = x->next)
		if (x == c)
			return 1;
	return 0;
}

/* Bytes the worker has not read yet from its end of c. */
static int unread(const struct mgr_conn *c)
{
	int n = 0;

	if (ioctl(c->fd, FIONREAD, &n) < 0)
		return 0;
	return n;
}

/* Let the worker handle epoll events ev on c until it stops reading (all
 * read, or it holds back: parked request, full output).  pr: c's pair
 * (NULL: not known), whose unread count is used and kept.  Returns 1
 * while c is alive; *progress: it read something. */
static int serve_ev(struct mp_mgrloop *h, struct mgr_conn *c,
		    struct mp_mgrloop_pair *pr, uint32_t ev, int *progress)
{
	int left = pr && pr->unread >= 0 ? pr->unread : unread(c);

	*progress = 0;
	for (int round = 0; round < 64; round++) {
		int now;

		h->w.now = mp_time_now_ns();
		mgr_worker_serve(&h->w, c, ev);
		if (!mp_mgrloop_alive(h, c)) {
			mgr_worker_end_pass(&h->w, 0);
			return 0;
		}
		mgr_worker_end_pass(&h->w, 0);
		if (!mp_mgrloop_alive(h, c))
			return 0;
		now = unread(c);
		if (pr)
			pr->unread = now;
		if (now < left)
			*progress = 1;
		if (now == 0 || now == left || (ev & EPOLLRDHUP))
			break;
		left = now;
	}
	return 1;
}

int mp_mgrloop_feed(struct mp_mgrloop *h, struct mgr_conn *c, int fd,
		    const void *data, size_t len, int eof)
{
	const uint8_t *p = data;
	struct mp_mgrloop_pair *pr = pair_of(h, fd);
	int alive = mp_mgrloop_alive(h, c), progress;

	while (alive && len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			if (pr && pr->unread >= 0)
				pr->unread += (int)n;
		}
		alive = serve_ev(h, c, pr, EPOLLIN, &progress);
		/* Let the worker's output out, or its buffer fills up. */
		mp_mgrloop_drain(fd, NULL, 0);
		/* The socket is full and the worker reads no more: the
		 * rest would never arrive (a real peer would block). */
		if (n <= 0 && !progress)
			break;
	}
	if (alive && eof) {
		if (pr)
			pr->burned = 1;
		shutdown(fd, SHUT_WR);
		alive = serve_ev(h, c, pr, EPOLLIN | EPOLLRDHUP, &progress);
		mp_mgrloop_drain(fd, NULL, 0);
	}
	return alive;
}

int mp_mgrloop_serve(struct mp_mgrloop *h, struct mgr_conn *c)
{
	int progress;

	/* The caller wrote to a far end itself (which one is not known
	 * from c): every busy pair counts afresh. */
	for (int i = 0; i < MP_MGRLOOP_POOL; i++)
		if (h->pool[i].busy)
			h->pool[i].unread = -1;
	return mp_mgrloop_alive(h, c) && serve_ev(h, c, NULL, EPOLLIN,
						  &progress);
}

void mp_mgrloop_pass(struct mp_mgrloop *h, int tick_too)
{
	h->w.now = mp_time_now_ns();
	mgr_worker_end_pass(&h->w, tick_too);
}

int mp_mgrloop_trace;

/* Print the frames of what the worker wrote (as far as whole frames
 * start at the beginning of this read: a debugging aid only). */
static void trace_frames(int fd, const uint8_t *p, size_t n)
{
	struct mp_wire_msg m;
	int rc;

	while ((rc = mp_wire_decode(p, n, 1u << 20, &m)) > 0) {
		fprintf(stderr, "  fd %d <- %s a=%d b=%d c=%d u=%llu\n", fd,
			mp_wire_op_name(m.op), m.a, m.b, m.c,
			(unsigned long long)m.u);
		p += rc;
		n -= (size_t)rc;
	}
}

size_t mp_mgrloop_drain(int fd, void *buf, size_t cap)
{
	uint8_t tmp[4096];
	size_t got = 0;

	for (;;) {
		uint8_t *dst = buf ? (uint8_t *)buf + got : tmp;
		size_t want = buf ? cap - got : sizeof(tmp);
		ssize_t n;

		if (want == 0)
			break;
		n = recv(fd, dst, want, MSG_DONTWAIT);
		if (n <= 0)
			break;
		if (mp_mgrloop_trace)
			trace_frames(fd, dst, (size_t)n);
		got += (size_t)n;
		/* A short read from a stream socket: it is empty now (no
		 * need for the recv that would say EAGAIN, see epoll(7)). */
		if ((size_t)n < want)
			break;
	}
	return got;
}
