/*
 * mgr_worker — a worker's event loop (see mgr_worker.h).
 *
 * One pass: wait (epoll, at most one tick), note the time, accept, read
 * and handle requests of ready connections, act on wake-up hints (deliver
 * records, events, retry parked senders and LOCATE waiters), flush every
 * connection that got output, then the tick's timers.  Signals only set
 * flags that the loop reads.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "mgr_deliver.h"
#include "mgr_log.h"
#include "mgr_net.h"
#include "mgr_proto.h"
#include "mgr_sec.h"
#include "mgr_worker.h"
#include "mp_alloc.h"
#include "mp_time.h"

#define MAX_EVENTS   256
#define ACCEPT_BURST 64
#define TAG_LISTEN   ((void *)1)
#define TAG_EVENTFD  ((void *)2)

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t master_gone_flag;

static void on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void on_master_gone(int sig)
{
	(void)sig;
	master_gone_flag = 1;
}

static int setup_signals(void)
{
	struct sigaction sa;
	sigset_t none;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_master_gone;
	sigaction(SIGUSR2, &sa, NULL);
	/* The master handles these for the whole manager. */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Die with the master (and check getppid in the tick, for a master
	 * that died before this call). */
	return prctl(PR_SET_PDEATHSIG, SIGUSR2);
}

void mgr_worker_dirty(struct mgr_worker *w, struct mgr_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = 1;
	c->dirty_next = w->dirty;
	w->dirty = c;
}

void mgr_worker_unbind(struct mgr_worker *w, struct mgr_conn *c)
{
	if (c->reg >= 0 && (uint32_t)c->reg < w->st->lay.max_regs &&
	    w->reg_conn[c->reg] == c)
		w->reg_conn[c->reg] = NULL;
	c->reg = -1;
}

/* Input c may buffer: a whole request once registered, a handshake frame
 * before (an unauthenticated peer gets no more memory than that). */
static size_t in_limit(const struct mgr_worker *w, const struct mgr_conn *c)
{
	return c->state == MGR_CONN_OPEN ? w->in_limit : MGR_HS_IN_MAX;
}

static void update_mask(struct mgr_worker *w, struct mgr_conn *c, int want_out)
{
	uint32_t mask = 0;
	struct epoll_event ev;

	if (c->state != MGR_CONN_CLOSING &&
	    mgr_conn_out_pending(c) < MGR_OUT_HIGH &&
	    mgr_conn_in_avail(c) < in_limit(w, c))
		mask |= EPOLLIN | EPOLLRDHUP;
	if (want_out)
		mask |= EPOLLOUT;
	if ((mask & EPOLLIN) && !c->tls_ready && mgr_conn_tls_input(c)) {
		/* TLS holds input the socket no longer reports: the loop
		 * reads it at its next pass (serve_tls_ready). */
		c->tls_ready = 1;
		c->tls_next = w->tls_ready;
		w->tls_ready = c;
	}
	if (mask == c->epoll_mask)
		return;
	ev.events = mask;
	ev.data.ptr = c;
	if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->epoll_mask = mask;
}

/* How conn_close ends a connection. */
enum {
	CLOSE_KEEP,   /* BYE already ended the registration, or the worker
			 is stopping and leaves it to be orphaned */
	CLOSE_END,    /* end of stream, or dropped by us: unclean end now */
	CLOSE_FAILED, /* the link failed with an error: the registration
			 may be held for a resume (mgr_state_reg_lost) */
};

/* Close c; ending is one of CLOSE_*. */
static void conn_close(struct mgr_worker *w, struct mgr_conn *c, int ending)
{
	if (ending != CLOSE_KEEP && c->reg >= 0)
		mgr_state_reg_lost(w->st, c->reg,
				   ending == CLOSE_FAILED ? MGR_LOST_ERROR
							  : MGR_LOST_END);
	mgr_worker_unbind(w, c);
	mgr_proto_forget(w, c);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->dirty) {
		struct mgr_conn **pp = &w->dirty;

		while (*pp && *pp != c)
			pp = &(*pp)->dirty_next;
		if (*pp)
			*pp = c->dirty_next;
	}
	if (c->tls_ready) {
		struct mgr_conn **pp = &w->tls_ready;

		while (*pp && *pp != c)
			pp = &(*pp)->tls_next;
		if (*pp)
			*pp = c->tls_next;
	}
	mgr_sec_peer_put((unsigned)w->index, c->peer_idx);
	/* close() removes it from the epoll set. */
	mgr_conn_free(c);
	__atomic_sub_fetch(&w->st->workers[w->index].connections, 1,
			   __ATOMIC_RELAXED);
}

/* Close c, which ended (CLOSE_END) or failed (CLOSE_FAILED) because of
 * why. */
static void drop(struct mgr_worker *w, struct mgr_conn *c, int how,
		 const char *why)
{
	/* A peer that got a challenge and left without answering it had no
	 * secret (or gave up): a refusal like a wrong proof, logged once. */
	if (!c->authed && c->challenged &&
	    mgr_ratelimit_take(&w->peer_rl, NULL))
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-AUTH",
			"peer %s: left without proving the secret (%s)",
			c->peer, why);
	mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-CLOSE",
		"peer %s (registration %u): %s", c->peer, c->regno, why);
	conn_close(w, c, how);
}

/* Close a just-accepted fd because limit `key` is reached (logged,
 * rate-limited). */
static void refuse(struct mgr_worker *w, int fd, const char *msgid,
		   const char *key, int64_t limit, const char *peer)
{
	if (mgr_ratelimit_take(&w->accept_rl, NULL))
		mgr_log(MGR_LOG_WARNING, msgid, "%s (%lld) reached; refusing %s",
			key, (long long)limit, peer);
	close(fd);
}

static void accept_some(struct mgr_worker *w)
{
	for (int i = 0; i < ACCEPT_BURST; i++) {
		struct mgr_conn *c;
		char peer[64];
		int fd, pidx;

		fd = mgr_net_accept(w->lfd, peer, sizeof(peer));
		if (fd == -EAGAIN)
			return;
		if ((fd == -EMFILE || fd == -ENFILE) && w->spare_fd >= 0) {
			/* Out of descriptors: the pending connection would
			 * keep the listening socket readable and this loop
			 * spinning.  Give up the spare descriptor, accept
			 * the connection and close it (the peer sees it
			 * refused at once), then take the spare back. */
			close(w->spare_fd);
			fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				close(fd);
			w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			if (mgr_ratelimit_take(&w->accept_rl, NULL))
				mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-NOFILE",
					"out of file descriptors; refusing a "
					"connection");
			continue;
		}
		if (fd < 0) {
			if (mgr_ratelimit_take(&w->accept_rl, NULL))
				mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-ACCEPT",
					"accept: %s", strerror(-fd));
			return;
		}
		if (mgr_state_connections(w->st) >=
		    (uint64_t)w->cfg.max_connections) {
			refuse(w, fd, "MESSIP-MGR-MAXCONN", "max_connections",
			       w->cfg.max_connections, peer);
			continue;
		}
		pidx = mgr_sec_peer_take((unsigned)w->index, fd,
					 w->cfg.max_connections_per_peer);
		if (pidx == -EUSERS) {
			refuse(w, fd, "MESSIP-MGR-MAXPEER",
			       "max_connections_per_peer",
			       w->cfg.max_connections_per_peer, peer);
			continue;
		}
		c = mgr_worker_adopt(w, fd, peer);
		if (!c) {
			mgr_sec_peer_put((unsigned)w->index, pidx);
			continue;
		}
		c->peer_idx = pidx;
	}
}

struct mgr_conn *mgr_worker_adopt(struct mgr_worker *w, int fd,
				  const char *peer)
{
	struct epoll_event ev;
	struct mgr_conn *c = mgr_conn_new(fd, peer);

	if (!c) {
		close(fd);
		return NULL;
	}
	c->out_hard = (size_t)w->cfg.max_conn_output;
	c->deadline_ns = w->now + w->cfg.handshake_timeout_ms * 1000000LL;
	c->epoll_mask = EPOLLIN | EPOLLRDHUP;
	ev.events = c->epoll_mask;
	ev.data.ptr = c;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		mgr_conn_free(c);
		return NULL;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	__atomic_add_fetch(&w->st->workers[w->index].connections, 1,
			   __ATOMIC_RELAXED);
	return c;
}

/* Input is ready on c: read what fits and handle it. */
static void conn_readable(struct mgr_worker *w, struct mgr_conn *c,
			  uint32_t events)
{
	for (int rounds = 0; rounds < 4; rounds++) {
		int n = mgr_conn_read(c, in_limit(w, c));

		if (n == -ENOBUFS && (events & (EPOLLHUP | EPOLLERR))) {
			/* Cannot read further and the socket is dead: it
			 * would be reported again and again. */
			drop(w, c, CLOSE_FAILED,
			     "connection reset while input was full");
			return;
		}
		if (n == -EAGAIN || n == -ENOBUFS)
			break;
		if (n == 0) {
			/* EOF: handle what is complete, then end. */
			mgr_proto_input(w, c);
			drop(w, c, CLOSE_END, "end of stream");
			return;
		}
		if (n < 0) {
			if (c->tls && !mp_tls_ready(c->tls) &&
			    mgr_ratelimit_take(&w->peer_rl, NULL))
				mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-TLS",
					"peer %s: %s; closing", c->peer,
					mp_tls_why(c->tls));
			drop(w, c, CLOSE_FAILED, strerror(-n));
			return;
		}
		if (mgr_proto_input(w, c) < 0) {
			__atomic_add_fetch(&w->st->workers[w->index].errors, 1,
					   __ATOMIC_RELAXED);
			conn_close(w, c, CLOSE_END);
			return;
		}
		if (c->park_deadline || c->state == MGR_CONN_CLOSING ||
		    mgr_conn_out_pending(c) >= MGR_OUT_HIGH)
			break;
	}
	/* A TLS handshake step may have left ciphertext to send. */
	update_mask(w, c,
		    (c->epoll_mask & EPOLLOUT) ||
			    (c->tls && mp_tls_pending_out(c->tls)));
}

/* Connections whose input TLS holds (update_mask listed them): read
 * them as if the socket had reported it, each at most once per pass. */
static void serve_tls_ready(struct mgr_worker *w)
{
	int n = 0;

	for (struct mgr_conn *c = w->tls_ready; c; c = c->tls_next)
		n++;
	while (n-- > 0 && w->tls_ready) {
		struct mgr_conn *c = w->tls_ready;

		w->tls_ready = c->tls_next;
		c->tls_ready = 0;
		conn_readable(w, c, EPOLLIN);
	}
}

/* Write the output of every connection that got some this pass. */
static void flush_dirty(struct mgr_worker *w)
{
	while (w->dirty) {
		struct mgr_conn *c = w->dirty;
		int rc;

		w->dirty = c->dirty_next;
		c->dirty = 0;
		rc = mgr_conn_flush(c, w->now);
		if (rc < 0) {
			drop(w, c, CLOSE_FAILED, strerror(-rc));
			continue;
		}
		if (rc == 0 && c->state == MGR_CONN_CLOSING) {
			conn_close(w, c, CLOSE_KEEP);
			continue;
		}
		update_mask(w, c, rc == 1);
	}
}

/* EPOLLOUT on c: write; when room came back, resume streaming to it.
 * Returns 0 if c was closed. */
static int conn_writable(struct mgr_worker *w, struct mgr_conn *c)
{
	int rc = mgr_conn_flush(c, w->now);

	if (rc < 0) {
		drop(w, c, CLOSE_FAILED, strerror(-rc));
		return 0;
	}
	if (rc == 0 && c->state == MGR_CONN_CLOSING) {
		conn_close(w, c, CLOSE_KEEP);
		return 0;
	}
	if (mgr_conn_out_pending(c) < MGR_OUT_HIGH) {
		if (c->nsrv)
			mgr_deliver_conn(w, c);
		if (w->events_blocked)
			mgr_state_wake(w->st, w->index, MGR_WAKE_EVENT);
	}
	update_mask(w, c, rc == 1);
	return 1;
}

/* Parked senders: retry (a ring got room) or time them out. */
static void retry_parked(struct mgr_worker *w)
{
	struct mgr_conn *c, *next;

	for (c = w->conns; c && w->nparked; c = next) {
		next = c->next;
		if (!c->park_deadline)
			continue;
		if (mgr_proto_input(w, c) < 0) {
			conn_close(w, c, CLOSE_END);
			continue;
		}
		update_mask(w, c, c->epoll_mask & EPOLLOUT);
	}
}

static void reload(struct mgr_worker *w)
{
	int64_t vals[MGR_CFG_RELOADABLE];

	if (!mgr_state_read_settings(w->st, &w->settings_gen, vals))
		return;
	if (mgr_config_import(&w->cfg, vals))
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-SETTINGS",
			"ignored out-of-range settings from the segment");
	mgr_log_setup((enum mgr_log_level)w->cfg.log_level,
		      (enum mgr_log_target)w->cfg.log_target);
	w->st->resume_grace_ms = w->cfg.resume_grace_ms;
	w->st->default_buffered = (uint32_t)w->cfg.default_buffered;
}

static void handle_hints(struct mgr_worker *w)
{
	for (int round = 0; round < 8; round++) {
		uint32_t hints = mgr_state_take_hints(w->st);

		if (!hints && !w->events_blocked)
			return;
		if (hints & MGR_WAKE_RELOAD)
			reload(w);
		if (hints & MGR_WAKE_DATA)
			mgr_deliver_all(w);
		if (hints & (MGR_WAKE_EVENT | MGR_WAKE_DEATH) ||
		    w->events_blocked)
			mgr_deliver_events(w);
		if (hints & (MGR_WAKE_ROOM | MGR_WAKE_ORPHAN))
			retry_parked(w);
		if (hints & MGR_WAKE_LOCATE)
			mgr_proto_locates(w, 1);
		if (!hints)
			return;
	}
}

static void tick(struct mgr_worker *w)
{
	struct mgr_conn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (c->stall_ns &&
		    w->now - c->stall_ns >= w->cfg.write_timeout_ms * 1000000LL) {
			__atomic_add_fetch(&w->st->workers[w->index].errors, 1,
					   __ATOMIC_RELAXED);
			if (mgr_ratelimit_take(&w->peer_rl, NULL))
				mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-SLOWPEER",
					"peer %s (registration %u) read "
					"nothing of %zu pending bytes for "
					"%lld ms; dropping it",
					c->peer, c->regno,
					mgr_conn_out_pending(c),
					(long long)w->cfg.write_timeout_ms);
			conn_close(w, c,
				   c->state == MGR_CONN_OPEN ? CLOSE_END
							     : CLOSE_KEEP);
			continue;
		}
		if (!c->deadline_ns || w->now < c->deadline_ns)
			continue;
		if (c->state == MGR_CONN_HANDSHAKE) {
			__atomic_add_fetch(&w->st->workers[w->index].errors, 1,
					   __ATOMIC_RELAXED);
			if (mgr_ratelimit_take(&w->peer_rl, NULL))
				mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-HANDSHAKE",
					"peer %s: no %s within %lld ms; "
					"closing",
					c->peer,
					c->authed ? "HELLO" : "authentication",
					(long long)w->cfg.handshake_timeout_ms);
		} else if (c->state == MGR_CONN_OPEN) {
			__atomic_add_fetch(&w->st->workers[w->index].errors, 1,
					   __ATOMIC_RELAXED);
			if (mgr_ratelimit_take(&w->peer_rl, NULL))
				mgr_log(MGR_LOG_WARNING,
					"MESSIP-MGR-READTIMEOUT",
					"peer %s (registration %u): frame not "
					"completed within %lld ms; closing",
					c->peer, c->regno,
					(long long)w->cfg.handshake_timeout_ms);
		}
		conn_close(w, c,
			   c->state == MGR_CONN_OPEN ? CLOSE_END : CLOSE_KEEP);
	}
	if (w->nparked)
		retry_parked(w);
	if (w->locates)
		mgr_proto_locates(w, 0);
	mgr_state_housekeep(w->st, w->now);
	if (w->deliver_blocked) {
		w->deliver_blocked = 0;
		mgr_deliver_all(w);
	}
	if (w->events_blocked)
		mgr_deliver_events(w);
	if (getppid() != w->master_pid)
		master_gone_flag = 1;
}

static int setup(struct mgr_worker *w)
{
	struct epoll_event ev;

	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0)
		return -errno;
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* EPOLLEXCLUSIVE: one worker is woken per new connection. */
	ev.events = EPOLLIN | EPOLLEXCLUSIVE;
	ev.data.ptr = TAG_LISTEN;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) < 0)
		return -errno;
	ev.events = EPOLLIN;
	ev.data.ptr = TAG_EVENTFD;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev) < 0)
		return -errno;
	w->reg_conn = mp_calloc(w->st->lay.max_regs, sizeof(*w->reg_conn));
	if (!w->reg_conn)
		return -ENOMEM;
	w->in_limit = mgr_worker_in_limit(&w->cfg);
	return 0;
}

int mgr_worker_run(struct mgr_state *st, const struct mgr_config *cfg,
		   int index, int lfd, int efd, pid_t master,
		   uint64_t host_token)
{
	static struct mgr_worker wk;
	struct mgr_worker *w = &wk;
	struct epoll_event evs[MAX_EVENTS];
	int64_t next_tick;
	int rc;

	mgr_log_set_role(index);
	memset(w, 0, sizeof(*w));
	w->index = index;
	w->cfg = *cfg;
	w->st = st;
	w->lfd = lfd;
	w->efd = efd;
	w->master_pid = master;
	w->host_token = host_token;
	snprintf(w->host_token_str, sizeof(w->host_token_str), "%llu",
		 (unsigned long long)host_token);
	if (setup_signals() < 0 || getppid() != master)
		return 0;
	rc = mgr_state_attach_worker(st, index, cfg);
	if (rc == 0)
		rc = setup(w);
	if (rc < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-WORKERSETUP",
			"worker set-up failed: %s", strerror(-rc));
		return MGR_EXIT_FATAL;
	}
	/* Settings may have been reloaded before this worker (re)started. */
	w->settings_gen = 0;
	reload(w);
	__atomic_store_n(&st->workers[index].running, 1, __ATOMIC_RELEASE);
	mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-WORKER", "worker running");
	/* Anything owed to this worker index before it started. */
	mgr_state_wake(st, index, MGR_WAKE_EVENT | MGR_WAKE_DEATH);
	next_tick = mp_time_now_ns();

	while (!stop_flag && !master_gone_flag) {
		int timeout = mp_time_left_ms(next_tick), n;

		if (w->dirty || w->st->self_hints || w->tls_ready)
			timeout = 0;
		n = epoll_wait(w->epfd, evs, MAX_EVENTS, timeout);
		w->now = mp_time_now_ns();
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			uint64_t cnt;

			if (p == TAG_LISTEN) {
				accept_some(w);
			} else if (p == TAG_EVENTFD) {
				if (read(w->efd, &cnt, sizeof(cnt)) < 0) {
					/* EAGAIN: another pass drained it */
				}
			} else {
				/* Only c's own handling can close c, so c
				 * is valid for each of its events here. */
				mgr_worker_serve(w, p, evs[i].events);
			}
		}
		serve_tls_ready(w);
		handle_hints(w);
		flush_dirty(w);
		if (w->now >= next_tick) {
			tick(w);
			flush_dirty(w);
			next_tick = w->now + MGR_TICK_MS * 1000000LL;
		}
	}

	if (master_gone_flag) {
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-ORPHANED",
			"master %ld is gone; worker exiting", (long)master);
		mgr_state_unlink_orphaned(st);
	}
	/* Leave registrations as they are: if the manager goes on, they are
	 * orphaned and resumed elsewhere. */
	mgr_worker_close_all(w, CLOSE_KEEP);
	free(w->reg_conn);
	close(w->epfd);
	return 0;
}

/* ---- the loop's steps, for a harness that plays the loop -------------- */

void mgr_worker_serve(struct mgr_worker *w, struct mgr_conn *c,
		      uint32_t events)
{
	if ((events & EPOLLOUT) && !conn_writable(w, c))
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		conn_readable(w, c, events);
}

void mgr_worker_end_pass(struct mgr_worker *w, int tick_too)
{
	serve_tls_ready(w);
	handle_hints(w);
	flush_dirty(w);
	if (tick_too) {
		tick(w);
		flush_dirty(w);
	}
}

void mgr_worker_close_all(struct mgr_worker *w, int ending)
{
	while (w->conns)
		conn_close(w, w->conns, ending);
}
