/*
 * mp_proxy — fault-injecting TCP proxy (see mp_proxy.h).
 *
 * One child process, one poll loop.  Each accepted connection is a pair
 * of sockets (fd[0]: the side that connected, fd[1]: towards the target)
 * and two directions; direction s reads fd[s] and writes fd[1 - s].
 * Bytes read go through a small frame tracker (header, then payload
 * count) that lets a cut land in the middle of a chosen frame and a
 * CH_INFO be held whole to be rewritten; everything else is queued
 * unchanged as chunks, each with the time it may be written.
 *
 * Invariants:
 *   - a direction's chunks are written in the order they were read, and a
 *     chunk's due time is never earlier than its predecessor's;
 *   - a direction holds at most MP_PROXY_QUEUE_MAX queued bytes: beyond
 *     that its source is not read;
 *   - a reset is propagated: a pair is closed with RST on both sides as
 *     soon as either side resets, or when a cut fires;
 *   - the knobs live in a shared anonymous mapping written by the test
 *     process; the proxy reloads them when the control pipe wakes it, and
 *     clears the one-shot ones itself once they fired.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mp_proxy.h"
#include "mp_test.h"
#include "mp_wire.h"

#define READ_MAX    65536
#define DATA_MAX    65536 /* largest data field a frame may carry */
#define MAX_PAIRS   512
#define CUT_WAIT_NS 1000000000LL /* how long a cut waits for its half frame */

struct mp_proxy_shared {
	struct mp_proxy_knobs knobs[2];
	unsigned gen;
	unsigned applied; /* gen the proxy loop works with (mp_proxy_set) */
	struct mp_proxy_stats st;
};

struct chunk {
	struct chunk *next;
	int64_t due;
	size_t len, off;
	uint8_t data[];
};

struct dir {
	struct chunk *head, *tail;
	size_t queued;
	int64_t last_due;
	uint8_t hdr[MP_WIRE_HDR_SIZE];
	size_t hdr_have;
	uint64_t left; /* payload bytes of the current frame to pass */
	bool raw;      /* not messip framing: pass bytes blindly */
	uint8_t *hold; /* a CH_INFO kept whole for rewriting */
	size_t hold_len, hold_need;
	long cut_left; /* >= 0: bytes to pass before the cut fires */
	bool eof;      /* the source sent FIN */
	bool shut;     /* FIN passed on */
};

struct pair {
	struct pair *next;
	int kind;
	int fd[2];
	struct dir d[2];
	bool cutting;
	int cut_dir;
	int64_t cut_deadline;
	bool dead;
};

struct relay {
	char orig[MP_WIRE_ADDR_MAX + 1];
	struct sockaddr_in target;
	int lfd;
	int port;
};

/* ---- child state (the proxy process only) ------------------------------- */
static struct mp_proxy_shared *S;
static struct mp_proxy_knobs K[2];
static struct pair *pairs;
static int npairs;
static struct relay relays[MP_PROXY_RELAYS];
static int nrelays;
static struct sockaddr_in mgr_target;
static unsigned rnd;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static unsigned next_rand(void)
{
	rnd ^= rnd << 13;
	rnd ^= rnd >> 17;
	rnd ^= rnd << 5;
	return rnd;
}

static void stat_add(long *p, long v)
{
	__atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

static unsigned loaded_gen; /* gen of the knobs in K */

static void load_knobs(void)
{
	/* The acquire pairs with set's release of gen. */
	loaded_gen = __atomic_load_n(&S->gen, __ATOMIC_ACQUIRE);
	memcpy(K, S->knobs, sizeof(K));
}

/* ---- queues ------------------------------------------------------------- */

static int queue_bytes(struct pair *p, int s, const uint8_t *b, size_t n)
{
	const struct mp_proxy_knobs *k = &K[p->kind];
	struct dir *d = &p->d[s];
	struct chunk *c;
	int64_t due;

	if (!n)
		return 0;
	c = malloc(sizeof(*c) + n);
	if (!c)
		return -ENOMEM;
	due = now_ns() + (int64_t)k->delay_ms * 1000000LL;
	if (k->jitter_ms > 0)
		due += (int64_t)(next_rand() % (unsigned)(k->jitter_ms + 1)) *
		       1000000LL;
	if (due < d->last_due)
		due = d->last_due; /* never ahead of what was read before */
	d->last_due = due;
	c->next = NULL;
	c->due = due;
	c->len = n;
	c->off = 0;
	memcpy(c->data, b, n);
	if (d->tail)
		d->tail->next = c;
	else
		d->head = c;
	d->tail = c;
	d->queued += n;
	return 0;
}

static void queue_free(struct dir *d)
{
	while (d->head) {
		struct chunk *c = d->head;

		d->head = c->next;
		free(c);
	}
	d->tail = NULL;
	d->queued = 0;
	free(d->hold);
	d->hold = NULL;
}

/* ---- pairs -------------------------------------------------------------- */

static void rst_close(int fd)
{
	struct linger lg = {1, 0};

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void pair_reset(struct pair *p)
{
	if (p->dead)
		return;
	rst_close(p->fd[0]);
	rst_close(p->fd[1]);
	p->fd[0] = p->fd[1] = -1;
	p->dead = true;
}

static void pair_close(struct pair *p)
{
	if (p->dead)
		return;
	close(p->fd[0]);
	close(p->fd[1]);
	p->fd[0] = p->fd[1] = -1;
	p->dead = true;
}

static void start_cut(struct pair *p, int s)
{
	p->cutting = true;
	p->cut_dir = s;
	p->cut_deadline = now_ns() + CUT_WAIT_NS;
}

/* ---- relays (the client's direct links) --------------------------------- */

static int parse_v4(const char *addr, struct sockaddr_in *sa)
{
	char host[MP_WIRE_ADDR_MAX + 1];
	const char *colon = strrchr(addr, ':');
	size_t hl;

	if (!colon)
		return -1;
	hl = (size_t)(colon - addr);
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int listen_any(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 256) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* The relay port standing for server address orig (made on first use). */
static int relay_for(const char *orig)
{
	struct relay *r;

	for (int i = 0; i < nrelays; i++)
		if (strcmp(relays[i].orig, orig) == 0)
			return relays[i].port;
	if (nrelays == MP_PROXY_RELAYS)
		return -1;
	r = &relays[nrelays];
	if (parse_v4(orig, &r->target) < 0)
		return -1;
	r->lfd = listen_any(&r->port);
	if (r->lfd < 0)
		return -1;
	snprintf(r->orig, sizeof(r->orig), "%s", orig);
	nrelays++;
	return r->port;
}

/* Rewrite a whole CH_INFO frame and queue it (or queue it unchanged). */
static int queue_rewritten(struct pair *p, int s, const uint8_t *f, size_t n)
{
	/* + the channel ticket CH_INFO carries (its only data). */
	uint8_t out[MP_WIRE_HDR_SIZE + MP_WIRE_FIXED_MAX + 64];
	struct mp_wire_msg m;
	int port, len;

	if (mp_wire_decode(f, n, MP_WIRE_FIXED_MAX, &m) != (int)n ||
	    m.op != MP_OP_CH_INFO || m.a != 0 || !m.addr[0])
		return queue_bytes(p, s, f, n);
	port = relay_for(m.addr);
	if (port < 0)
		return queue_bytes(p, s, f, n);
	snprintf(m.addr, sizeof(m.addr), "127.0.0.1:%d", port);
	m.u = 0; /* "another host": the client must use TCP */
	len = mp_wire_encode(&m, out, sizeof(out));
	if (len <= 0)
		return queue_bytes(p, s, f, n);
	stat_add(&S->st.rewrites, 1);
	return queue_bytes(p, s, out, (size_t)len);
}

/*
 * Take n bytes read in direction s through the frame tracker.  Returns
 * 0, or -1 when the pair must be reset (out of memory).
 */
static int feed(struct pair *p, int s, const uint8_t *b, size_t n)
{
	struct dir *d = &p->d[s];

	while (n > 0 && !p->cutting) {
		size_t take;

		if (d->raw)
			return queue_bytes(p, s, b, n);
		if (d->hold) {
			take = d->hold_need - d->hold_len;
			if (take > n)
				take = n;
			memcpy(d->hold + d->hold_len, b, take);
			d->hold_len += take;
			b += take;
			n -= take;
			if (d->hold_len == d->hold_need) {
				int rc = queue_rewritten(p, s, d->hold,
							 d->hold_len);

				free(d->hold);
				d->hold = NULL;
				if (rc < 0)
					return -1;
			}
			continue;
		}
		if (d->left > 0) {
			take = d->left < n ? (size_t)d->left : n;
			if (d->cut_left >= 0 && take > (size_t)d->cut_left)
				take = (size_t)d->cut_left;
			if (queue_bytes(p, s, b, take) < 0)
				return -1;
			d->left -= take;
			b += take;
			n -= take;
			if (d->cut_left >= 0) {
				d->cut_left -= (long)take;
				if (d->cut_left == 0)
					start_cut(p, s);
			}
			continue;
		}
		/* A header: keep it until whole, then decide. */
		take = MP_WIRE_HDR_SIZE - d->hdr_have;
		if (take > n)
			take = n;
		memcpy(d->hdr + d->hdr_have, b, take);
		d->hdr_have += take;
		b += take;
		n -= take;
		if (d->hdr_have < MP_WIRE_HDR_SIZE)
			continue;
		d->hdr_have = 0;
		{
			struct mp_wire_hdr h;
			size_t whole, half;
			int *cut = &S->knobs[p->kind].cut_op[s];

			if (mp_wire_decode_hdr(d->hdr, MP_WIRE_HDR_SIZE,
					       DATA_MAX,
					       &h) != MP_WIRE_HDR_SIZE) {
				d->raw = true;
				if (queue_bytes(p, s, d->hdr, MP_WIRE_HDR_SIZE))
					return -1;
				continue;
			}
			whole = MP_WIRE_HDR_SIZE + (size_t)h.len;
			if (K[p->kind].cut_op[s] == h.op &&
			    __atomic_exchange_n(cut, 0, __ATOMIC_ACQ_REL) ==
				    h.op) {
				K[p->kind].cut_op[s] = 0;
				half = whole / 2;
				if (half <= MP_WIRE_HDR_SIZE) {
					if (queue_bytes(p, s, d->hdr, half))
						return -1;
					start_cut(p, s);
					return 0;
				}
				if (queue_bytes(p, s, d->hdr, MP_WIRE_HDR_SIZE))
					return -1;
				d->left = h.len;
				d->cut_left = (long)(half - MP_WIRE_HDR_SIZE);
				continue;
			}
			if (p->kind == MP_PROXY_MGR && s == MP_PROXY_BACK &&
			    K[p->kind].rewrite_info && h.op == MP_OP_CH_INFO) {
				d->hold = malloc(whole);
				if (!d->hold)
					return -1;
				memcpy(d->hold, d->hdr, MP_WIRE_HDR_SIZE);
				d->hold_len = MP_WIRE_HDR_SIZE;
				d->hold_need = whole;
				if (whole == MP_WIRE_HDR_SIZE) {
					free(d->hold);
					d->hold = NULL;
					if (queue_bytes(p, s, d->hdr, whole))
						return -1;
				}
				continue;
			}
			if (queue_bytes(p, s, d->hdr, MP_WIRE_HDR_SIZE))
				return -1;
			d->left = h.len;
		}
	}
	return 0;
}

static void accept_on(int lfd, int kind, const struct sockaddr_in *target)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1, tfd;
		struct pair *p;

		if (fd < 0)
			return;
		stat_add(&S->st.conns[kind], 1);
		if (K[kind].refuse || npairs >= MAX_PAIRS) {
			rst_close(fd);
			continue;
		}
		/* Loopback: a blocking connect answers at once. */
		tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (tfd < 0 || connect(tfd, (const struct sockaddr *)target,
				       sizeof(*target)) < 0) {
			if (tfd >= 0)
				close(tfd);
			rst_close(fd); /* as the target itself would */
			continue;
		}
		fcntl(tfd, F_SETFL, fcntl(tfd, F_GETFL) | O_NONBLOCK);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(tfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		p = calloc(1, sizeof(*p));
		if (!p) {
			rst_close(fd);
			rst_close(tfd);
			continue;
		}
		p->kind = kind;
		p->fd[0] = fd;
		p->fd[1] = tfd;
		p->d[0].cut_left = p->d[1].cut_left = -1;
		p->next = pairs;
		pairs = p;
		npairs++;
		stat_add(&S->st.active[kind], 1);
	}
}

/* Read once from fd[s]. */
static void read_side(struct pair *p, int s)
{
	static uint8_t buf[READ_MAX];
	ssize_t n = recv(p->fd[s], buf, sizeof(buf), MSG_DONTWAIT);
	const char *w = K[p->kind].watch;

	if (n > 0 && w[0] &&
	    memmem(buf, (size_t)n, w, strnlen(w, sizeof(K[0].watch))))
		stat_add(&S->st.watch_hits[p->kind], 1);
	if (n > 0) {
		if (feed(p, s, buf, (size_t)n) < 0)
			pair_reset(p);
		return;
	}
	if (n == 0) {
		p->d[s].eof = true;
		return;
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		pair_reset(p); /* a reset on one side resets the other */
}

/* Write what is due in direction s. */
static void write_side(struct pair *p, int s, int64_t now)
{
	const struct mp_proxy_knobs *k = &K[p->kind];
	struct dir *d = &p->d[s];
	int out = p->fd[1 - s];

	if (k->stall[s])
		return;
	while (d->head && d->head->due <= now) {
		struct chunk *c = d->head;
		size_t want = c->len - c->off;
		ssize_t n;

		if (k->split > 0 && want > (size_t)k->split)
			want = (size_t)k->split;
		n = send(out, c->data + c->off, want,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				return;
			pair_reset(p);
			return;
		}
		c->off += (size_t)n;
		d->queued -= (size_t)n;
		stat_add(&S->st.bytes[p->kind][s], (long)n);
		if (c->off == c->len) {
			d->head = c->next;
			if (!d->head)
				d->tail = NULL;
			free(c);
		} else if (k->split > 0 && k->piece_gap_us > 0) {
			c->due = now + (int64_t)k->piece_gap_us * 1000;
			return;
		}
	}
	if (!d->head && d->eof && !d->shut && !p->cutting) {
		shutdown(out, SHUT_WR);
		d->shut = true;
	}
}

static void finish_cut(struct pair *p, int64_t now)
{
	struct dir *d = &p->d[p->cut_dir];
	int outq = 0;

	if (d->head && now < p->cut_deadline)
		return;
	/* Wait for the half frame to be taken by the peer's kernel: a RST
	 * would throw away what is still in our send queue. */
	if (ioctl(p->fd[1 - p->cut_dir], SIOCOUTQ, &outq) == 0 && outq > 0 &&
	    now < p->cut_deadline)
		return;
	pair_reset(p);
	stat_add(&S->st.cuts, 1);
}

static void reap(void)
{
	for (struct pair **pp = &pairs; *pp;) {
		struct pair *p = *pp;

		if (!p->dead && p->d[0].shut && p->d[1].shut)
			pair_close(p);
		if (!p->dead) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		queue_free(&p->d[0]);
		queue_free(&p->d[1]);
		stat_add(&S->st.active[p->kind], -1);
		npairs--;
		free(p);
	}
}

static void apply_reset_all(void)
{
	for (int kind = 0; kind < 2; kind++) {
		if (!K[kind].reset_all)
			continue;
		__atomic_store_n(&S->knobs[kind].reset_all, 0,
				 __ATOMIC_RELEASE);
		K[kind].reset_all = 0;
		for (struct pair *p = pairs; p; p = p->next) {
			if (p->kind == kind && !p->dead) {
				pair_reset(p);
				stat_add(&S->st.cuts, 1);
			}
		}
	}
}

static void proxy_loop(int lfd, int ctl)
{
	static struct pollfd pf[2 + MP_PROXY_RELAYS + 2 * MAX_PAIRS];
	static struct pair *owner[2 + MP_PROXY_RELAYS + 2 * MAX_PAIRS];

	load_knobs();
	for (;;) {
		int64_t now = now_ns(), wake = now + 1000000000LL;
		int n = 0, nrel, timeout, rc;

		/* Every poll set built from here on uses K: tell
		 * mp_proxy_set (release: K was loaded before). */
		__atomic_store_n(&S->applied, loaded_gen, __ATOMIC_RELEASE);
		apply_reset_all();
		reap();
		pf[n].fd = ctl;
		pf[n].events = POLLIN;
		owner[n++] = NULL;
		pf[n].fd = lfd;
		pf[n].events = POLLIN;
		owner[n++] = NULL;
		nrel = nrelays;
		for (int i = 0; i < nrel; i++) {
			pf[n].fd = relays[i].lfd;
			pf[n].events = POLLIN;
			owner[n++] = NULL;
		}
		for (struct pair *p = pairs; p; p = p->next) {
			const struct mp_proxy_knobs *k = &K[p->kind];

			if (p->cutting) {
				finish_cut(p, now);
				if (p->dead)
					continue;
				if (p->cut_deadline < wake)
					wake = p->cut_deadline;
				if (now + 1000000 < wake)
					wake = now + 1000000; /* SIOCOUTQ */
			}
			for (int s = 0; s < 2; s++) {
				struct dir *d = &p->d[s];
				short ev = 0;

				if (!d->eof && !k->stall[s] && !p->cutting &&
				    d->queued < MP_PROXY_QUEUE_MAX)
					ev |= POLLIN;
				if (d->head && !k->stall[s] &&
				    d->head->due > now && d->head->due < wake)
					wake = d->head->due;
				pf[n + s].fd = p->fd[s];
				pf[n + s].events = ev;
				pf[n + s].revents = 0;
				owner[n + s] = p;
			}
			/* Output towards fd[s] comes from direction 1 - s. */
			for (int s = 0; s < 2; s++) {
				struct dir *d = &p->d[1 - s];

				if (d->head && !k->stall[1 - s] &&
				    d->head->due <= now)
					pf[n + s].events |= POLLOUT;
			}
			n += 2;
		}
		timeout = (int)((wake - now + 999999) / 1000000);
		if (timeout < 0)
			timeout = 0;
		rc = poll(pf, (nfds_t)n, timeout);
		if (rc < 0 && errno != EINTR)
			_exit(2);
		now = now_ns();
		if (rc > 0 && pf[0].revents) {
			char b[64];
			ssize_t r = read(ctl, b, sizeof(b));

			if (r == 0)
				_exit(0); /* the test is gone */
			load_knobs();
		}
		if (rc > 0 && pf[1].revents)
			accept_on(lfd, MP_PROXY_MGR, &mgr_target);
		for (int i = 0; rc > 0 && i < nrel; i++)
			if (pf[2 + i].revents)
				accept_on(relays[i].lfd, MP_PROXY_DIRECT,
					  &relays[i].target);
		for (int i = 2 + nrel; i < n; i += 2) {
			struct pair *p = owner[i];

			for (int s = 0; s < 2 && !p->dead; s++)
				if (pf[i + s].revents &
				    (POLLIN | POLLHUP | POLLERR))
					read_side(p, s);
			for (int s = 0; s < 2 && !p->dead; s++)
				write_side(p, s, now);
		}
	}
}

/* ---- the test's side ---------------------------------------------------- */

int mp_proxy_start(struct mp_proxy *px, int target_port,
		   const struct mp_proxy_knobs *k)
{
	int pfd[2], lfd;

	memset(px, 0, sizeof(*px));
	px->sh = mmap(NULL, sizeof(*px->sh), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (px->sh == MAP_FAILED) {
		px->sh = NULL;
		return -errno;
	}
	memset(px->sh, 0, sizeof(*px->sh));
	if (k)
		px->sh->knobs[MP_PROXY_MGR] = *k;
	lfd = listen_any(&px->port);
	if (lfd < 0) {
		munmap(px->sh, sizeof(*px->sh));
		px->sh = NULL;
		return lfd;
	}
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		close(lfd);
		munmap(px->sh, sizeof(*px->sh));
		px->sh = NULL;
		return -errno;
	}
	snprintf(px->ref, sizeof(px->ref), "127.0.0.1:%d", px->port);
	memset(&mgr_target, 0, sizeof(mgr_target));
	mgr_target.sin_family = AF_INET;
	mgr_target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	mgr_target.sin_port = htons((uint16_t)target_port);
	rnd = mp_test_rand() | 1;
	px->pid = mp_test_fork();
	if (px->pid < 0) {
		close(lfd);
		close(pfd[0]);
		close(pfd[1]);
		return -errno;
	}
	if (px->pid == 0) {
		/* Keep nothing of the test's connections open here. */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != lfd && fd != pfd[0])
				close(fd);
		signal(SIGPIPE, SIG_IGN);
		S = px->sh;
		proxy_loop(lfd, pfd[0]);
		_exit(0);
	}
	close(lfd);
	close(pfd[0]);
	px->ctl = pfd[1];
	return 0;
}

void mp_proxy_set(struct mp_proxy *px, int kind, const struct mp_proxy_knobs *k)
{
	static const struct mp_proxy_knobs none;
	char c = 'k';
	unsigned gen;

	if (!px->sh || kind < 0 || kind > 1)
		return;
	memcpy(&px->sh->knobs[kind], k ? k : &none, sizeof(*k));
	gen = __atomic_add_fetch(&px->sh->gen, 1, __ATOMIC_RELEASE);
	if (write(px->ctl, &c, 1) != 1)
		return; /* the proxy is gone: nothing to tell */
	/* Wait (a bounded while) until the proxy works with them, so that
	 * what the test does next is subject to them. */
	for (int i = 0; i < 2000; i++) {
		if ((int)(__atomic_load_n(&px->sh->applied, __ATOMIC_ACQUIRE) -
			  gen) >= 0)
			return;
		usleep(1000);
	}
}

void mp_proxy_stats(struct mp_proxy *px, struct mp_proxy_stats *st)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (px->sh)
		memcpy(st, &px->sh->st, sizeof(*st));
	else
		memset(st, 0, sizeof(*st));
}

int mp_proxy_wait_cuts(struct mp_proxy *px, long n, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 5) {
		struct mp_proxy_stats st;

		mp_proxy_stats(px, &st);
		if (st.cuts >= n)
			return 0;
		usleep(5000);
	}
	return -ETIMEDOUT;
}

void mp_proxy_stop(struct mp_proxy *px)
{
	if (px->pid > 0)
		mp_test_kill(px->pid);
	px->pid = 0;
	if (px->ctl > 0)
		close(px->ctl);
	px->ctl = -1;
	if (px->sh)
		munmap(px->sh, sizeof(*px->sh));
	px->sh = NULL;
}
