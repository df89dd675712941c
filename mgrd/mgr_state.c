/*
 * mgr_state — the manager's shared-memory segment (see mgr_state.h for the
 * layout, the locking rules and the invariants).
 *
 * Shared fields are plain fixed-width integers; the few read or written
 * outside the lock use the __atomic builtins, and each such access says
 * what it publishes.  Everything read from the segment is bounds-checked
 * against the trusted layout before it is used as an index.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "mgr_log.h"
#include "mgr_state.h"
#include "mp_alloc.h"
#include "mp_proc.h"
#include "mp_time.h"

#define HOUSEKEEP_NS   (100 * 1000000LL)
#define MAX_CAPACITY   (1u << 20)
#define ALIGN(x, a)    (((x) + (a)-1) & ~((size_t)(a)-1))

/* ---- small helpers ------------------------------------------------------ */

static uint64_t random_token(void)
{
	static uint64_t fallback;
	uint64_t t = 0;

	if (getrandom(&t, sizeof(t), GRND_NONBLOCK) != sizeof(t))
		/* No entropy yet: still unique within this manager. */
		t = (uint64_t)mp_time_now_ns() ^ ((uint64_t)getpid() << 32) ^
		    ++fallback * 0x9e3779b97f4a7c15ULL;
	return t ? t : 1;
}

static void copy_str(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	memset(dst + n, 0, size - n);
}

/* Queue hint bits for worker w until the lock is released. */
static void queue_wake(struct mgr_state *st, uint32_t w, uint32_t bits)
{
	if (w >= st->lay.nworkers)
		return;
	if ((int)w == st->self)
		st->self_hints |= bits;
	else
		st->wake[w] |= bits;
}

static void queue_wake_mask(struct mgr_state *st, uint64_t mask, uint32_t bits)
{
	for (uint32_t w = 0; w < st->lay.nworkers && mask; w++, mask >>= 1)
		if (mask & 1)
			queue_wake(st, w, bits);
}

static int reg_ok(const struct mgr_state *st, uint32_t reg)
{
	return reg < st->lay.max_regs;
}

/* Worker currently serving live registration reg, or MGR_NONE (orphaned,
 * dead, or its worker died). */
static uint32_t reg_owner(struct mgr_state *st, uint32_t reg)
{
	struct mgr_reg_sh *r;
	uint32_t w;

	if (!reg_ok(st, reg))
		return MGR_NONE;
	r = &st->regs[reg];
	w = r->worker;
	if (r->state != REG_LIVE || w >= st->lay.nworkers)
		return MGR_NONE;
	/* Acquire: pairs with the master's release when it bumps the epoch
	 * of a dead worker. */
	if (__atomic_load_n(&st->workers[w].epoch, __ATOMIC_ACQUIRE) !=
	    r->epoch)
		return MGR_NONE;
	return w;
}

static int owned_by_me(struct mgr_state *st, uint32_t reg)
{
	return st->self >= 0 && reg_owner(st, reg) == (uint32_t)st->self &&
	       st->regs[reg].epoch == st->self_epoch;
}

static int ch_is_live(const struct mgr_state *st, uint32_t slot, uint32_t gen)
{
	return slot < st->lay.max_channels &&
	       __atomic_load_n(&st->chans[slot].state, __ATOMIC_ACQUIRE) ==
		       CH_LIVE &&
	       st->chans[slot].gen == gen;
}

static void *ring_mem(struct mgr_state *st, uint32_t slot)
{
	return st->rings + (size_t)slot * st->lay.ring_size;
}

/* ---- layout and set-up -------------------------------------------------- */

size_t mgr_state_layout(const struct mgr_config *c, struct mgr_layout *lay)
{
	size_t off, chans_by_mem;

	memset(lay, 0, sizeof(*lay));
	lay->nworkers = (uint32_t)c->workers;
	lay->max_payload = (uint32_t)c->max_message_size;
	/* Every ring can hold the largest message; smaller limits still get
	 * 64 KiB so that small records batch well. */
	lay->ring_data_bytes = mp_ring_min_data_bytes(lay->max_payload);
	if (lay->ring_data_bytes == 0)
		return 0;
	if (lay->ring_data_bytes < 65536)
		lay->ring_data_bytes = 65536;
	lay->ring_size = ALIGN(mp_ring_size(lay->ring_data_bytes), 4096);
	if (lay->ring_size == 0)
		return 0;
	chans_by_mem = (size_t)c->ring_memory / lay->ring_size;
	if (chans_by_mem == 0)
		return 0;
	lay->max_channels = (uint32_t)((size_t)c->max_channels < chans_by_mem
						? (size_t)c->max_channels
						: chans_by_mem);
	lay->max_regs = (uint32_t)(2 * c->max_connections + 64);
	if (lay->max_regs > (1u << 21))
		lay->max_regs = 1u << 21;
	lay->max_links = (uint32_t)c->max_links;

	off = ALIGN(sizeof(struct mgr_sh), 64);
	lay->off_workers = off;
	off += (size_t)lay->nworkers * sizeof(struct mgr_worker_sh);
	lay->off_regs = off = ALIGN(off, 64);
	off += (size_t)lay->max_regs * sizeof(struct mgr_reg_sh);
	lay->off_chans = off = ALIGN(off, 64);
	off += (size_t)lay->max_channels * sizeof(struct mgr_ch_sh);
	lay->off_links = off = ALIGN(off, 64);
	off += (size_t)lay->max_links * sizeof(struct mgr_link_sh);
	lay->off_chtab = off = ALIGN(off, 64);
	lay->chtab_size = mp_chtab_size(lay->max_channels);
	if (lay->chtab_size == 0)
		return 0;
	off += lay->chtab_size;
	/* The payload starts MP_SHM_HDR_SIZE into a page-aligned mapping;
	 * align rings on pages of the mapping, not of the payload. */
	off = ALIGN(off + MP_SHM_HDR_SIZE, 4096) - MP_SHM_HDR_SIZE;
	lay->off_rings = off;
	off += (size_t)lay->max_channels * lay->ring_size;
	lay->total = MP_SHM_HDR_SIZE + off;
	return lay->total;
}

/* Point the handle's arrays into the mapping (trusted layout). */
static void bind_arrays(struct mgr_state *st)
{
	uint8_t *p = mp_shm_payload(&st->shm);

	st->sh = (struct mgr_sh *)p;
	st->workers = (struct mgr_worker_sh *)(p + st->lay.off_workers);
	st->regs = (struct mgr_reg_sh *)(p + st->lay.off_regs);
	st->chans = (struct mgr_ch_sh *)(p + st->lay.off_chans);
	st->links = (struct mgr_link_sh *)(p + st->lay.off_links);
	st->rings = p + st->lay.off_rings;
}

/* Is pid a live process that could be a manager?  A pid that exists but
 * runs something else (pid reuse) does not count, nor a zombie (a master
 * killed a moment ago and not yet reaped by its parent). */
static int manager_alive(pid_t pid)
{
	char buf[256], *rp;

	if (pid <= 0 || pid == getpid())
		return 0;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return 0;
	rp = mp_proc_stat(pid, buf, sizeof(buf));
	if (!rp)
		return 1; /* cannot tell: assume it is */
	if (rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
		return 0;
	return strstr(buf, "(messip-mgr)") != NULL;
}

int mgr_state_create(struct mgr_state *st, const struct mgr_config *c,
		     const char *name, const int *efds, pid_t *other_pid)
{
	mode_t mode = (mode_t)c->shm_mode;
	gid_t gid = c->shm_group < 0 ? (gid_t)-1 : (gid_t)c->shm_group;
	int rc;

	memset(st, 0, sizeof(*st));
	st->self = -1;
	st->efds = efds;
	if (mgr_state_layout(c, &st->lay) == 0)
		return -EINVAL;
	for (int attempt = 0; attempt < 2; attempt++) {
		mp_shm_t old;

		rc = mp_shm_create(&st->shm, name, MGR_SHM_MAGIC,
				   MGR_SHM_VERSION, st->lay.total, mode, gid);
		if (rc != -EEXIST || attempt)
			break;
		/* A segment of that name exists.  Ours (the listen socket
		 * is already bound) unless a live manager created it, e.g.
		 * one listening on another address with the same port. */
		if (mp_shm_open(&old, name, MGR_SHM_MAGIC, MGR_SHM_VERSION,
				0) == 0) {
			pid_t pid = (pid_t)((struct mp_shm_hdr *)old.base)
					    ->creator_pid;

			mp_shm_close(&old);
			if (manager_alive(pid)) {
				if (other_pid)
					*other_pid = pid;
				return -EEXIST;
			}
		}
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-STALESHM",
			"replacing stale segment %s left by a dead manager",
			name);
		mp_shm_unlink(name);
	}
	if (rc < 0)
		return rc;
	bind_arrays(st);
	rc = mp_lock_init(&st->sh->lock);
	if (rc == 0)
		rc = mp_chtab_init(&st->chtab,
				   (uint8_t *)st->sh + st->lay.off_chtab,
				   st->lay.chtab_size, st->lay.max_channels);
	if (rc < 0) {
		mp_shm_close(&st->shm);
		return rc;
	}
	st->sh->nworkers = st->lay.nworkers;
	st->sh->max_regs = st->lay.max_regs;
	st->sh->max_channels = st->lay.max_channels;
	st->sh->max_links = st->lay.max_links;
	st->sh->ring_data_bytes = st->lay.ring_data_bytes;
	st->sh->master_pid = (uint32_t)getpid();
	st->sh->next_regno = 1;
	for (uint32_t w = 0; w < st->lay.nworkers; w++)
		st->workers[w].epoch = 1;
	st->resume_grace_ms = c->resume_grace_ms;
	st->default_buffered = (uint32_t)c->default_buffered;
	mgr_state_publish_settings(st, c);
	mp_shm_publish(&st->shm);
	return 0;
}

void mgr_state_close(struct mgr_state *st)
{
	if (st->shm.base)
		mp_shm_close(&st->shm);
	free(st->ringh);
	free(st->ringh_gen);
	free(st->evbuf);
	free(st->evblocked);
	st->ringh = NULL;
	st->ringh_gen = NULL;
	st->evbuf = NULL;
	st->evblocked = NULL;
	st->evcap = 0;
}

int mgr_state_attach_worker(struct mgr_state *st, int self,
			    const struct mgr_config *c)
{
	/* The mapping and chtab handle came with fork; only the master may
	 * unlink the name. */
	st->shm.owner = 0;
	st->self = self;
	st->self_epoch =
		__atomic_load_n(&st->workers[self].epoch, __ATOMIC_ACQUIRE);
	st->self_hints = 0;
	memset(st->wake, 0, sizeof(st->wake));
	st->resume_grace_ms = c->resume_grace_ms;
	st->default_buffered = (uint32_t)c->default_buffered;
	st->ringh = mp_calloc(st->lay.max_channels, sizeof(*st->ringh));
	st->ringh_gen = mp_calloc(st->lay.max_channels, sizeof(*st->ringh_gen));
	st->evblocked = mp_calloc(st->lay.max_channels, 1);
	if (!st->ringh || !st->ringh_gen || !st->evblocked)
		return -ENOMEM;
	return 0;
}

void mgr_state_unlink_orphaned(struct mgr_state *st)
{
	mp_shm_t cur;
	uint32_t master = st->sh->master_pid;

	if (mp_shm_open(&cur, st->shm.name, MGR_SHM_MAGIC, MGR_SHM_VERSION,
			0) < 0)
		return;
	if (((struct mp_shm_hdr *)cur.base)->creator_pid == master &&
	    !manager_alive((pid_t)master))
		mp_shm_unlink(st->shm.name);
	mp_shm_close(&cur);
}

/* ---- master --------------------------------------------------------------- */

void mgr_state_worker_started(struct mgr_state *st, int w, pid_t pid)
{
	struct mgr_worker_sh *ws = &st->workers[w];

	__atomic_store_n(&ws->started_ns, mp_time_now_ns(), __ATOMIC_RELAXED);
	__atomic_store_n(&ws->pid, (uint32_t)pid, __ATOMIC_RELEASE);
}

void mgr_state_worker_died(struct mgr_state *st, int w)
{
	struct mgr_worker_sh *ws = &st->workers[w];

	__atomic_store_n(&ws->died_ns, mp_time_now_ns(), __ATOMIC_RELAXED);
	__atomic_store_n(&ws->pid, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&ws->running, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&ws->connections, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&ws->hints, 0, __ATOMIC_RELAXED);
	__atomic_add_fetch(&ws->restarts, 1, __ATOMIC_RELAXED);
	/* Release: publishes died_ns before anyone sees the registrations of
	 * this worker as orphaned (reg_owner's acquire load). */
	__atomic_add_fetch(&ws->epoch, 1, __ATOMIC_RELEASE);
	/* HELLOs waiting to resume its registrations can go on now. */
	for (uint32_t i = 0; i < st->lay.nworkers; i++)
		if ((int)i != w)
			mgr_state_wake(st, (int)i, MGR_WAKE_ORPHAN);
}

void mgr_state_publish_settings(struct mgr_state *st,
				const struct mgr_config *c)
{
	int64_t vals[MGR_CFG_RELOADABLE];
	struct mgr_sh *sh = st->sh;

	mgr_config_export(c, vals);
	/* Seqlock, single writer (the master): odd while writing. */
	__atomic_add_fetch(&sh->settings_seq, 1, __ATOMIC_ACQ_REL);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (int i = 0; i < MGR_CFG_RELOADABLE; i++)
		__atomic_store_n(&sh->settings[i], vals[i], __ATOMIC_RELAXED);
	/* Release: the values above before the even sequence number. */
	__atomic_add_fetch(&sh->settings_seq, 1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&sh->settings_gen, 1, __ATOMIC_RELEASE);
	for (uint32_t w = 0; w < st->lay.nworkers; w++)
		mgr_state_wake(st, (int)w, MGR_WAKE_RELOAD);
}

/* ---- wake-ups --------------------------------------------------------------- */

void mgr_state_wake(struct mgr_state *st, int w, uint32_t bits)
{
	uint64_t one = 1;
	uint32_t prev;

	if (w < 0 || (uint32_t)w >= st->lay.nworkers)
		return;
	if (w == st->self) {
		st->self_hints |= bits;
		return;
	}
	/* Seq-cst: the data this wake-up announces (a ring push, an event
	 * state) was written before; the target clears its hints before it
	 * looks at that data, so either it sees our bits or we see its
	 * cleared word and write the eventfd. */
	prev = __atomic_fetch_or(&st->workers[w].hints, bits, __ATOMIC_SEQ_CST);
	if (prev == 0 && st->efds && st->efds[w] >= 0) {
		if (write(st->efds[w], &one, sizeof(one)) < 0) {
			/* EAGAIN: the counter is already non-zero, so the
			 * worker will wake anyway. */
		}
	}
}

uint32_t mgr_state_take_hints(struct mgr_state *st)
{
	uint32_t bits = st->self_hints;

	st->self_hints = 0;
	if (st->self >= 0)
		bits |= __atomic_exchange_n(&st->workers[st->self].hints, 0,
					    __ATOMIC_SEQ_CST);
	return bits;
}

int mgr_state_read_settings(struct mgr_state *st, uint32_t *gen,
			    int64_t vals[MGR_CFG_RELOADABLE])
{
	struct mgr_sh *sh = st->sh;
	uint32_t g = __atomic_load_n(&sh->settings_gen, __ATOMIC_ACQUIRE);

	if (g == *gen)
		return 0;
	for (int tries = 0; tries < 1000; tries++) {
		uint32_t s1, s2;

		s1 = __atomic_load_n(&sh->settings_seq, __ATOMIC_ACQUIRE);
		if (s1 & 1)
			continue;
		for (int i = 0; i < MGR_CFG_RELOADABLE; i++)
			vals[i] = __atomic_load_n(&sh->settings[i],
						  __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(&sh->settings_seq, __ATOMIC_RELAXED);
		if (s1 == s2) {
			*gen = g;
			return 1;
		}
	}
	return 0; /* writer busy: try again on the next tick */
}

uint64_t mgr_state_connections(struct mgr_state *st)
{
	uint64_t n = 0;

	for (uint32_t w = 0; w < st->lay.nworkers; w++)
		n += __atomic_load_n(&st->workers[w].connections,
				     __ATOMIC_RELAXED);
	return n;
}

/* ---- lock ------------------------------------------------------------------ */

int mgr_state_lock(struct mgr_state *st)
{
	int rc = mp_lock_acquire(&st->sh->lock, MP_TIME_FOREVER);

	if (rc == MP_LOCK_REPAIR) {
		mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-REPAIR",
			"a process died holding the segment lock; repairing");
		mgr_state_repair(st);
		st->repairs++;
		rc = 0;
	}
	if (rc < 0)
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-LOCK",
			"segment lock unusable: %s", strerror(-rc));
	return rc;
}

void mgr_state_unlock(struct mgr_state *st)
{
	mp_lock_release(&st->sh->lock);
	for (uint32_t w = 0; w < st->lay.nworkers; w++) {
		if (st->wake[w]) {
			uint32_t bits = st->wake[w];

			st->wake[w] = 0;
			mgr_state_wake(st, (int)w, bits);
		}
	}
}

/* ---- channels (lock held) ------------------------------------------------- */

/*
 * Scans of the link table stop at the high-water mark (lock held): links
 * are taken lowest index first, so with few clients a scan reads a few
 * entries instead of max_links (16384 by default), which made every
 * look-up, disconnect and event acknowledgement cost tens of
 * microseconds.  The mark only grows (ch_connect raises it before the
 * link it covers becomes live, so a worker dying in between leaves it too
 * high, never too low); repair recomputes it.  Clamped: shared memory is
 * not trusted.
 */
static uint32_t links_end(const struct mgr_state *st)
{
	uint32_t hw = st->sh->links_hw;

	return hw < st->lay.max_links ? hw : st->lay.max_links;
}

static void link_free(struct mgr_state *st, struct mgr_link_sh *l)
{
	if (l->state == LINK_CONNECTED && l->ch < st->lay.max_channels &&
	    st->chans[l->ch].nclients > 0)
		st->chans[l->ch].nclients--;
	l->state = LINK_FREE;
	if (st->sh->nlinks > 0)
		st->sh->nlinks--;
}

/* Remove live channel slot: state first, so a crash half-way leaves a
 * record that repair drops; then the name; then its links. */
static void ch_remove_locked(struct mgr_state *st, uint32_t slot)
{
	struct mgr_ch_sh *ch = &st->chans[slot];
	uint64_t parked;

	/* Release: a consumer or producer that loads state (acquire) and
	 * sees FREE also sees the bumped generation. */
	ch->gen++;
	__atomic_store_n(&ch->state, CH_FREE, __ATOMIC_RELEASE);
	mp_chtab_remove(&st->chtab, ch->name);
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		struct mgr_link_sh *l = &st->links[i];

		if (l->state != LINK_FREE && l->ch == slot)
			link_free(st, l);
	}
	ch->nclients = 0;
	if (st->sh->nchannels > 0)
		st->sh->nchannels--;
	/* Parked senders must learn that the channel is gone. */
	parked = __atomic_exchange_n(&ch->parked, 0, __ATOMIC_SEQ_CST);
	queue_wake_mask(st, parked, MGR_WAKE_ROOM);
}

/* Is some registration other than `except` waiting for DEATH_PROCESS? */
static int death_listeners(struct mgr_state *st, uint32_t except)
{
	for (uint32_t r = 0; r < st->lay.max_regs; r++) {
		struct mgr_reg_sh *g = &st->regs[r];

		if (r != except && g->death_notify &&
		    (g->state == REG_LIVE || g->state == REG_ORPHAN))
			return 1;
	}
	return 0;
}

/* Free DEAD registrations that no death-notify channel still needs (has
 * not acknowledged). */
static void gc_dead_locked(struct mgr_state *st)
{
	uint64_t min_seen = UINT64_MAX;

	/* Called after every event handed out or acknowledged: without a
	 * dead registration there is nothing to do, and the scans below
	 * (every channel and registration slot) would cost more than the
	 * request that got here. */
	if (!st->sh->ndead)
		return;
	for (uint32_t s = 0; s < st->lay.max_channels; s++) {
		struct mgr_ch_sh *ch = &st->chans[s];
		struct mgr_reg_sh *cr;

		if (ch->state != CH_LIVE || !reg_ok(st, ch->creator))
			continue;
		cr = &st->regs[ch->creator];
		if (cr->death_notify &&
		    (cr->state == REG_LIVE || cr->state == REG_ORPHAN) &&
		    ch->ev_acked < min_seen)
			min_seen = ch->ev_acked;
	}
	for (uint32_t r = 0; r < st->lay.max_regs; r++) {
		struct mgr_reg_sh *g = &st->regs[r];

		if (g->state == REG_DEAD && g->death_seq <= min_seen) {
			g->state = REG_FREE;
			if (st->sh->ndead > 0)
				st->sh->ndead--;
			if (st->sh->nregs > 0)
				st->sh->nregs--;
		}
	}
}

/* End registration reg (lock held).  See mgr_state_reg_end(). */
static void reg_end_locked(struct mgr_state *st, uint32_t reg, int clean)
{
	struct mgr_reg_sh *r = &st->regs[reg];
	int32_t ev = clean ? LINK_EV_DISCONNECT : LINK_EV_DISMISSED;

	if (r->state != REG_LIVE && r->state != REG_ORPHAN)
		return;
	/* 1. Its client links become pending events for their servers
	 *    (exactly once: a link leaves CONNECTED here and only here). */
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		struct mgr_link_sh *l = &st->links[i];
		struct mgr_ch_sh *ch;

		if (l->state != LINK_CONNECTED || l->reg != reg)
			continue;
		if (!ch_is_live(st, l->ch, l->ch_gen) ||
		    st->chans[l->ch].creator == reg) {
			link_free(st, l);
			continue;
		}
		ch = &st->chans[l->ch];
		if (ch->nclients > 0)
			ch->nclients--;
		l->reg = MGR_NONE;
		l->ev_seq = ++st->sh->ev_seq;
		l->state = (uint32_t)ev;
		queue_wake(st, reg_owner(st, ch->creator), MGR_WAKE_EVENT);
	}
	/* 2. The channels it created go, names freed. */
	for (uint32_t s = 0; s < st->lay.max_channels; s++)
		if (st->chans[s].state == CH_LIVE && st->chans[s].creator == reg)
			ch_remove_locked(st, s);
	/* 3. Death notification, or free the slot. */
	if (!clean && death_listeners(st, reg)) {
		r->death_seq = ++st->sh->ev_seq;
		r->state = REG_DEAD;
		st->sh->ndead++;
		for (uint32_t w = 0; w < st->lay.nworkers; w++)
			queue_wake(st, w, MGR_WAKE_DEATH);
	} else {
		r->state = REG_FREE;
		if (st->sh->nregs > 0)
			st->sh->nregs--;
	}
	/* Log: the strings are the segment's, bounded by their arrays. */
	mgr_log(MGR_LOG_INFO, "MESSIP-MGR-END",
		"registration %u (%.*s, pid %d, peer %.*s) ended %s", r->regno,
		(int)sizeof(r->id), r->id, r->pid, (int)sizeof(r->peer),
		r->peer, clean ? "cleanly" : "uncleanly");
}

/* ---- registrations -------------------------------------------------------- */

static void reg_take(struct mgr_state *st, struct mgr_reg_sh *r,
		     const char *peer)
{
	r->worker = (uint32_t)st->self;
	r->epoch = st->self_epoch;
	r->deadline_ns = 0;
	copy_str(r->peer, sizeof(r->peer), peer ? peer : "");
	r->state = REG_LIVE;
	if (st->self >= 0)
		__atomic_add_fetch(&st->workers[st->self].registrations, 1,
				   __ATOMIC_RELAXED);
}

int mgr_state_reg_new(struct mgr_state *st, const char *id, int32_t pid,
		      const char *peer, struct mgr_reginfo *out)
{
	int rc = mgr_state_lock(st);

	if (rc < 0)
		return rc;
	rc = -ENOSPC;
	for (uint32_t i = 0; i < st->lay.max_regs; i++) {
		struct mgr_reg_sh *r = &st->regs[i];

		if (r->state != REG_FREE)
			continue;
		memset(r, 0, sizeof(*r));
		r->regno = st->sh->next_regno++;
		if (st->sh->next_regno == 0 ||
		    st->sh->next_regno > INT32_MAX)
			st->sh->next_regno = 1; /* travels as an int32 */
		r->token = random_token();
		r->pid = pid;
		r->since = (int64_t)time(NULL);
		copy_str(r->id, sizeof(r->id), id);
		st->sh->nregs++;
		reg_take(st, r, peer); /* state LIVE last */
		out->reg = (int)i;
		out->regno = r->regno;
		out->token = r->token;
		rc = 0;
		break;
	}
	mgr_state_unlock(st);
	return rc;
}

int mgr_state_reg_resume(struct mgr_state *st, uint64_t token,
			 const char *peer, struct mgr_reginfo *out)
{
	int rc;

	if (token == 0)
		return -EINVAL;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	rc = -ESTALE;
	for (uint32_t i = 0; i < st->lay.max_regs; i++) {
		struct mgr_reg_sh *r = &st->regs[i];

		if (r->token != token ||
		    (r->state != REG_LIVE && r->state != REG_ORPHAN))
			continue;
		/* Served by a live worker: its connection has not been
		 * seen to end yet (or that worker is dead but not yet
		 * reaped).  Never hand it over; the caller may wait. */
		if (r->state == REG_LIVE && reg_owner(st, i) != MGR_NONE) {
			rc = -EBUSY;
			break;
		}
		reg_take(st, r, peer);
		out->reg = (int)i;
		out->regno = r->regno;
		out->token = r->token;
		/* Whatever was owed to it while orphaned is ours now. */
		st->self_hints |= MGR_WAKE_DATA | MGR_WAKE_EVENT |
				  MGR_WAKE_DEATH;
		mgr_log(MGR_LOG_INFO, "MESSIP-MGR-RESUME",
			"registration %u (%s) resumed from %s", r->regno,
			r->id, r->peer);
		rc = 0;
		break;
	}
	mgr_state_unlock(st);
	return rc;
}

/*
 * Is process pid (as its HELLO said: untrusted, and only meaningful in
 * our PID namespace) still running?  A zombie is not: its sockets are
 * closed and it will never resume.  When /proc cannot tell, kill()'s
 * answer stands.
 */
static int pid_alive(int32_t pid)
{
	int s;

	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
		return 0;
	s = mp_proc_state(pid);
	return s != -ESRCH && s != 'Z' && s != 'X';
}

void mgr_state_reg_same_host(struct mgr_state *st, int reg, int same_host)
{
	if (reg < 0 || !reg_ok(st, (uint32_t)reg) || mgr_state_lock(st) < 0)
		return;
	st->regs[reg].same_host = same_host ? 1 : 0;
	mgr_state_unlock(st);
}

void mgr_state_reg_lost(struct mgr_state *st, int reg, enum mgr_lost_how how)
{
	struct mgr_reg_sh *r;

	if (reg < 0 || !reg_ok(st, (uint32_t)reg) || mgr_state_lock(st) < 0)
		return;
	r = &st->regs[reg];
	if (r->state == REG_LIVE && how == MGR_LOST_ERROR &&
	    (!r->same_host || pid_alive(r->pid))) {
		/* Held like a dead worker's registration; worker MGR_NONE
		 * marks it as orphaned by its link, whose process
		 * housekeeping keeps checking when it is on this host. */
		r->worker = MGR_NONE;
		r->deadline_ns = mp_time_now_ns() +
				 st->resume_grace_ms * 1000000LL;
		r->state = REG_ORPHAN;
		mgr_log(MGR_LOG_INFO, "MESSIP-MGR-LINKLOST",
			"registration %u (%.*s, pid %d, peer %.*s): link "
			"failed%s; waiting %lld ms for it to resume",
			r->regno, (int)sizeof(r->id), r->id, (int)r->pid,
			(int)sizeof(r->peer), r->peer,
			r->same_host ? " while the process lives"
				     : " (process on another host)",
			(long long)st->resume_grace_ms);
	} else {
		reg_end_locked(st, (uint32_t)reg, 0);
	}
	mgr_state_unlock(st);
}

void mgr_state_reg_end(struct mgr_state *st, int reg, int clean)
{
	if (reg < 0 || !reg_ok(st, (uint32_t)reg) || mgr_state_lock(st) < 0)
		return;
	reg_end_locked(st, (uint32_t)reg, clean);
	mgr_state_unlock(st);
}

int mgr_state_death_notify(struct mgr_state *st, int reg, int on)
{
	int rc;

	if (reg < 0 || !reg_ok(st, (uint32_t)reg))
		return -EINVAL;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	/* Switched on: only deaths from now on are reported (ev_acked gates
	 * deaths only; pending link events stay until acknowledged).  On
	 * again: deaths already owed are still delivered. */
	for (uint32_t s = 0; on && !st->regs[reg].death_notify &&
			     s < st->lay.max_channels;
	     s++)
		if (st->chans[s].state == CH_LIVE &&
		    st->chans[s].creator == (uint32_t)reg)
			st->chans[s].ev_acked = st->sh->ev_seq;
	st->regs[reg].death_notify = on ? 1 : 0;
	if (!on)
		gc_dead_locked(st);
	mgr_state_unlock(st);
	return 0;
}

int mgr_state_reg_list(struct mgr_state *st, int reg,
		       void (*cb)(void *ctx, int slot, uint32_t gen,
				  int created),
		       void *ctx)
{
	int n = 0;

	if (reg < 0 || !reg_ok(st, (uint32_t)reg) || mgr_state_lock(st) < 0)
		return 0;
	for (uint32_t s = 0; s < st->lay.max_channels; s++) {
		if (st->chans[s].state == CH_LIVE &&
		    st->chans[s].creator == (uint32_t)reg) {
			cb(ctx, (int)s, st->chans[s].gen, 1);
			n++;
		}
	}
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		struct mgr_link_sh *l = &st->links[i];

		if (l->state == LINK_CONNECTED && l->reg == (uint32_t)reg &&
		    ch_is_live(st, l->ch, l->ch_gen)) {
			cb(ctx, (int)l->ch, l->ch_gen, 0);
			n++;
		}
	}
	mgr_state_unlock(st);
	return n;
}

int mgr_state_housekeep(struct mgr_state *st, int64_t now_ns)
{
	int64_t due = __atomic_load_n(&st->sh->housekeep_ns, __ATOMIC_RELAXED);

	if (now_ns < due)
		return 0;
	/* One worker per period: the CAS winner does it. */
	if (!__atomic_compare_exchange_n(&st->sh->housekeep_ns, &due,
					 now_ns + HOUSEKEEP_NS, 0,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return 0;
	if (mgr_state_lock(st) < 0)
		return 0;
	for (uint32_t i = 0; i < st->lay.max_regs; i++) {
		struct mgr_reg_sh *r = &st->regs[i];

		if (r->state == REG_LIVE && reg_owner(st, i) == MGR_NONE) {
			int64_t died = 0;

			if (r->worker < st->lay.nworkers)
				died = __atomic_load_n(
					&st->workers[r->worker].died_ns,
					__ATOMIC_RELAXED);
			if (died <= 0 || died > now_ns)
				died = now_ns;
			r->deadline_ns =
				died + st->resume_grace_ms * 1000000LL;
			r->state = REG_ORPHAN;
			mgr_log(MGR_LOG_INFO, "MESSIP-MGR-ORPHAN",
				"registration %u (%.*s, peer %.*s) orphaned by "
				"the death of worker %u; waiting %lld ms for "
				"it to resume",
				r->regno, (int)sizeof(r->id), r->id,
				(int)sizeof(r->peer), r->peer, r->worker,
				(long long)st->resume_grace_ms);
		} else if (r->state == REG_ORPHAN &&
			   (now_ns >= r->deadline_ns ||
			    (r->worker == MGR_NONE && r->same_host &&
			     !pid_alive(r->pid)))) {
			/* Past the grace, or orphaned by its link and its
			 * process (on this host) has ended since: it will
			 * not resume. */
			reg_end_locked(st, i, 0);
		}
	}
	gc_dead_locked(st);
	mgr_state_unlock(st);
	return 1;
}

/* ---- channels --------------------------------------------------------------- */

int mgr_state_ch_create(struct mgr_state *st, int reg, const char *name,
			int32_t capacity, const char *addr,
			uint64_t host_token, const uint8_t *ticket,
			uint32_t *gen)
{
	struct mgr_ch_sh *ch;
	mp_ring_t ring;
	uint64_t waiters;
	int slot, rc;

	if (capacity < 0 || reg < 0 || !reg_ok(st, (uint32_t)reg))
		return -EINVAL;
	if (!name[0])
		return -EINVAL;
	if (capacity == 0)
		capacity = (int32_t)st->default_buffered;
	if ((uint32_t)capacity > MAX_CAPACITY)
		capacity = MAX_CAPACITY;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	slot = mp_chtab_insert(&st->chtab, name);
	if (slot < 0)
		goto out;
	if ((uint32_t)slot >= st->lay.max_channels) {
		mp_chtab_remove(&st->chtab, name);
		slot = -EBADMSG;
		goto out;
	}
	ch = &st->chans[slot];
	rc = mp_ring_init(&ring, ring_mem(st, (uint32_t)slot),
			  st->lay.ring_size, st->lay.ring_data_bytes,
			  (uint32_t)capacity, st->lay.max_payload);
	if (rc < 0) {
		mp_chtab_remove(&st->chtab, name);
		slot = rc;
		goto out;
	}
	if (ch->gen & 1)
		ch->gen++; /* a repaired record: keep live generations odd */
	ch->gen++;
	ch->creator = (uint32_t)reg;
	ch->creator_regno = st->regs[reg].regno;
	ch->capacity = (uint32_t)capacity;
	ch->nclients = 0;
	ch->host_token = host_token;
	ch->ev_acked = st->sh->ev_seq; /* earlier deaths are not its own */
	ch->since = (int64_t)time(NULL);
	__atomic_store_n(&ch->parked, 0, __ATOMIC_RELAXED);
	copy_str(ch->name, sizeof(ch->name), name);
	copy_str(ch->addr, sizeof(ch->addr), addr ? addr : "");
	if (ticket)
		memcpy(ch->ticket, ticket, MGR_TICKET_LEN);
	else
		memset(ch->ticket, 0, MGR_TICKET_LEN);
	/* Release: the record and its formatted ring before LIVE. */
	__atomic_store_n(&ch->state, CH_LIVE, __ATOMIC_RELEASE);
	*gen = ch->gen;
	st->sh->nchannels++;
	if (st->self >= 0) {
		st->ringh[slot] = ring;
		st->ringh_gen[slot] = ch->gen;
		__atomic_add_fetch(&st->workers[st->self].channels, 1,
				   __ATOMIC_RELAXED);
	}
	waiters = __atomic_exchange_n(&st->sh->locate_waiters, 0,
				      __ATOMIC_SEQ_CST);
	queue_wake_mask(st, waiters, MGR_WAKE_LOCATE);
out:
	mgr_state_unlock(st);
	return slot;
}

int mgr_state_ch_delete(struct mgr_state *st, int reg, const char *name,
			uint32_t *nclients, int *slotp)
{
	int slot, rc;

	*nclients = 0;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	slot = mp_chtab_lookup(&st->chtab, name);
	if (slot < 0 || (uint32_t)slot >= st->lay.max_channels ||
	    st->chans[slot].state != CH_LIVE) {
		rc = slot == -ENAMETOOLONG || slot == -EINVAL ? slot : -ENOENT;
	} else if (st->chans[slot].creator != (uint32_t)reg) {
		rc = -EPERM;
	} else {
		*slotp = slot;
		*nclients = st->chans[slot].nclients;
		if (*nclients == 0)
			ch_remove_locked(st, (uint32_t)slot);
		rc = 0;
	}
	mgr_state_unlock(st);
	return rc;
}

int mgr_state_ch_connect(struct mgr_state *st, int reg, const char *name,
			 struct mgr_chinfo *info)
{
	struct mgr_link_sh *free_link = NULL, *l;
	struct mgr_ch_sh *ch;
	struct mgr_reg_sh *me, *srv;
	int slot, rc, found = 0;

	if (reg < 0 || !reg_ok(st, (uint32_t)reg))
		return -EINVAL;
	if (!name[0])
		return -EINVAL;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	slot = mp_chtab_lookup(&st->chtab, name);
	if (slot < 0 || (uint32_t)slot >= st->lay.max_channels ||
	    st->chans[slot].state != CH_LIVE) {
		rc = slot == -ENAMETOOLONG || slot == -EINVAL ? slot : -ENOENT;
		goto out;
	}
	ch = &st->chans[slot];
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		l = &st->links[i];
		if (l->state == LINK_CONNECTED && l->reg == (uint32_t)reg &&
		    l->ch == (uint32_t)slot && l->ch_gen == ch->gen) {
			found = 1;
			break;
		}
		if (!free_link && l->state == LINK_FREE)
			free_link = l;
	}
	if (!found) {
		/* Past the mark every link is free: take the first one. */
		uint32_t k = links_end(st);

		for (; !free_link && k < st->lay.max_links; k++)
			if (st->links[k].state == LINK_FREE)
				free_link = &st->links[k];
		if (!free_link) {
			rc = -ENOSPC;
			goto out;
		}
		k = (uint32_t)(free_link - st->links);
		if (k >= st->sh->links_hw)
			st->sh->links_hw = k + 1; /* before the link is live */
		me = &st->regs[reg];
		free_link->ch = (uint32_t)slot;
		free_link->ch_gen = ch->gen;
		free_link->reg = (uint32_t)reg;
		free_link->regno = me->regno;
		memcpy(free_link->id, me->id, sizeof(free_link->id));
		free_link->state = LINK_CONNECTED;
		st->sh->nlinks++;
		ch->nclients++;
	}
	info->slot = slot;
	info->gen = ch->gen;
	info->server_regno = ch->creator_regno;
	info->host_token = ch->host_token;
	copy_str(info->name, sizeof(info->name), ch->name);
	copy_str(info->addr, sizeof(info->addr), ch->addr);
	memcpy(info->ticket, ch->ticket, MGR_TICKET_LEN);
	info->server_id[0] = 0;
	if (reg_ok(st, ch->creator)) {
		srv = &st->regs[ch->creator];
		copy_str(info->server_id, sizeof(info->server_id), srv->id);
	}
	rc = slot;
out:
	mgr_state_unlock(st);
	return rc;
}

int mgr_state_ch_disconnect(struct mgr_state *st, int reg, int slot,
			    uint32_t gen)
{
	int rc = mgr_state_lock(st);

	if (rc < 0)
		return rc;
	if (slot < 0 || !ch_is_live(st, (uint32_t)slot, gen)) {
		rc = -ESRCH;
		goto out;
	}
	rc = -EACCES;
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		struct mgr_link_sh *l = &st->links[i];
		struct mgr_ch_sh *ch = &st->chans[slot];

		if (l->state != LINK_CONNECTED || l->reg != (uint32_t)reg ||
		    l->ch != (uint32_t)slot || l->ch_gen != gen)
			continue;
		if (ch->nclients > 0)
			ch->nclients--;
		l->reg = MGR_NONE;
		l->ev_seq = ++st->sh->ev_seq;
		l->state = LINK_EV_DISCONNECT;
		queue_wake(st, reg_owner(st, ch->creator), MGR_WAKE_EVENT);
		rc = 0;
		break;
	}
out:
	mgr_state_unlock(st);
	return rc;
}

int mgr_state_ch_live(struct mgr_state *st, int slot, uint32_t gen)
{
	return slot >= 0 && ch_is_live(st, (uint32_t)slot, gen);
}

/* ---- buffered messages ------------------------------------------------------ */

/* Ring handle of a live (slot, gen) for this process, attached on first
 * use after the channel was (re)created. */
static mp_ring_t *ring_handle(struct mgr_state *st, uint32_t slot,
			      uint32_t gen)
{
	if (!st->ringh)
		return NULL;
	if (st->ringh_gen[slot] != gen) {
		if (mp_ring_attach(&st->ringh[slot], ring_mem(st, slot),
				   st->lay.ring_size) < 0) {
			st->ringh_gen[slot] = 0;
			return NULL;
		}
		st->ringh_gen[slot] = gen;
	}
	return &st->ringh[slot];
}

int mgr_state_bsend(struct mgr_state *st, int reg, int slot, uint32_t gen,
		    uint32_t reqid, int32_t type, const void *data,
		    uint32_t len)
{
	struct mp_ring_rec meta;
	struct mgr_reg_sh *me;
	mp_ring_t *ring;
	int rc;

	if (len > st->lay.max_payload)
		return -EMSGSIZE;
	if (reg < 0 || !reg_ok(st, (uint32_t)reg))
		return -EINVAL;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	if (slot < 0 || !ch_is_live(st, (uint32_t)slot, gen)) {
		rc = -ESRCH;
		goto out;
	}
	ring = ring_handle(st, (uint32_t)slot, gen);
	if (!ring) {
		rc = -EBADMSG;
		goto out;
	}
	me = &st->regs[reg];
	/* A re-sent request (its worker died before the answer left): it
	 * was queued, so answer as the first time.  Serial order: ids wrap
	 * around, and only the last one can really come again. */
	if (reqid && me->bsend_reqid &&
	    (int32_t)(reqid - me->bsend_reqid) <= 0) {
		mgr_log(MGR_LOG_DEBUG, "MESSIP-MGR-BSENDAGAIN",
			"registration %u: BSEND %u was queued already "
			"(last %u); not queued again",
			me->regno, reqid, me->bsend_reqid);
		rc = reqid == me->bsend_reqid ? me->bsend_queued : 0;
		goto out;
	}
	memset(&meta, 0, sizeof(meta));
	meta.type = type;
	meta.sender = me->regno;
	memcpy(meta.id, me->id, sizeof(meta.id) - 1);
	/* A worker killed between the push and recording its reqid would
	 * let the re-sent request be queued twice: say what is being
	 * pushed, so that repair can finish the recording (pend_head). */
	if (reqid) {
		st->sh->pend_reg = (uint32_t)reg;
		st->sh->pend_slot = (uint32_t)slot;
		st->sh->pend_gen = gen;
		st->sh->pend_head = mp_ring_head(ring);
		st->sh->pend_reqid = reqid;
	}
	/* Deadline 0: never wait inside the lock; a full ring is reported
	 * (-ETIMEDOUT) and the caller parks the request. */
	rc = mp_ring_push(ring, &meta, data, len, 0);
	if (rc >= 0) {
		if (reqid) {
			me->bsend_queued = rc;
			me->bsend_reqid = reqid;
		}
		__atomic_add_fetch(&st->workers[st->self].accepted, 1,
				   __ATOMIC_RELAXED);
		queue_wake(st, reg_owner(st, st->chans[slot].creator),
			   MGR_WAKE_DATA);
	}
	st->sh->pend_reqid = 0;
out:
	mgr_state_unlock(st);
	return rc;
}

/* Repair: finish the recording of a BSEND whose worker died holding the
 * lock after its record was published (see mgr_state_bsend). */
static void repair_pending_bsend(struct mgr_state *st)
{
	struct mgr_sh *sh = st->sh;
	uint32_t reg = sh->pend_reg, slot = sh->pend_slot;
	uint32_t reqid = sh->pend_reqid;
	struct mgr_reg_sh *g;
	mp_ring_t *ring;

	if (!reqid)
		return;
	sh->pend_reqid = 0;
	if (!reg_ok(st, reg) || slot >= st->lay.max_channels)
		return;
	ring = ring_handle(st, slot, sh->pend_gen);
	g = &st->regs[reg];
	if (!ring || mp_ring_head(ring) == sh->pend_head ||
	    g->bsend_reqid == reqid)
		return;
	mgr_log(MGR_LOG_WARNING, "MESSIP-MGR-REPAIR",
		"registration %u: BSEND %u was queued by a worker that died; "
		"recorded", g->regno, reqid);
	g->bsend_reqid = reqid;
	g->bsend_queued = 0; /* unknown: the count is advisory */
}

int mgr_state_room(struct mgr_state *st, int slot, uint32_t gen,
		   uint32_t len)
{
	mp_ring_t *ring = mgr_state_ring(st, slot, gen);

	return ring ? mp_ring_room(ring, len) : 0;
}

void mgr_state_park(struct mgr_state *st, int slot)
{
	if (slot < 0 || (uint32_t)slot >= st->lay.max_channels || st->self < 0)
		return;
	/* Seq-cst, then the caller retries the push: pairs with the fence
	 * in mgr_state_release() so that room made in between is seen by
	 * one side or the other (no lost wake-up). */
	__atomic_fetch_or(&st->chans[slot].parked, 1ULL << st->self,
			  __ATOMIC_SEQ_CST);
}

void mgr_state_locate_wait(struct mgr_state *st)
{
	if (st->self < 0)
		return;
	/* Seq-cst, then the caller retries the lookup (see park). */
	__atomic_fetch_or(&st->sh->locate_waiters, 1ULL << st->self,
			  __ATOMIC_SEQ_CST);
}

mp_ring_t *mgr_state_ring(struct mgr_state *st, int slot, uint32_t gen)
{
	if (slot < 0 || !ch_is_live(st, (uint32_t)slot, gen))
		return NULL;
	return ring_handle(st, (uint32_t)slot, gen);
}

int mgr_state_release(struct mgr_state *st, int slot, uint32_t gen,
		      uint64_t cursor, uint32_t nrec)
{
	mp_ring_t *ring = mgr_state_ring(st, slot, gen);
	uint64_t parked;
	int rc;

	if (!ring)
		return -ESRCH;
	rc = mp_ring_release(ring, cursor);
	if (rc < 0)
		return rc;
	if (st->self >= 0)
		__atomic_add_fetch(&st->workers[st->self].delivered, nrec,
				   __ATOMIC_RELAXED);
	/* Full fence between freeing room and reading who is parked; pairs
	 * with mgr_state_park(). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&st->chans[slot].parked, __ATOMIC_RELAXED) == 0)
		return 0;
	parked = __atomic_exchange_n(&st->chans[slot].parked, 0,
				     __ATOMIC_SEQ_CST);
	for (uint32_t w = 0; w < st->lay.nworkers && parked; w++, parked >>= 1)
		if (parked & 1)
			mgr_state_wake(st, (int)w, MGR_WAKE_ROOM);
	return 0;
}

/* ---- events ------------------------------------------------------------------ */

/* One pending event, for putting a worker's events in sequence order. */
struct ev_item {
	uint64_t seq;
	uint32_t slot;
	uint32_t src;   /* link index, or registration index for a death */
	uint32_t death; /* DEATH_PROCESS of regs[src] (else a link event) */
	uint32_t pad;
};

static int ev_cmp(const void *a, const void *b)
{
	const struct ev_item *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Append it to the process-local scratch array.  0 or -ENOMEM. */
static int ev_add(struct mgr_state *st, size_t *n, uint64_t seq,
		  uint32_t slot, uint32_t src, uint32_t death)
{
	struct ev_item *v = st->evbuf;

	if (*n == st->evcap) {
		size_t cap = st->evcap ? 2 * st->evcap : 64;

		v = mp_realloc(st->evbuf, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		st->evbuf = v;
		st->evcap = cap;
	}
	v[*n].seq = seq;
	v[*n].slot = slot;
	v[*n].src = src;
	v[*n].death = death;
	v[*n].pad = 0;
	(*n)++;
	return 0;
}

/* Gather this worker's unacknowledged events into st->evbuf: dead
 * registrations first (v[0..*ndead), templates), then the events
 * themselves (v[*ndead..*n)).  0 or -ENOMEM. */
static int ev_gather(struct mgr_state *st, size_t *ndead, size_t *n)
{
	*n = 0;
	for (uint32_t r = 0; st->sh->ndead && r < st->lay.max_regs; r++)
		if (st->regs[r].state == REG_DEAD &&
		    ev_add(st, n, st->regs[r].death_seq, 0, r, 1) < 0)
			return -ENOMEM;
	*ndead = *n;
	for (uint32_t s = 0; *ndead && s < st->lay.max_channels; s++) {
		struct mgr_ch_sh *ch = &st->chans[s];

		if (ch->state != CH_LIVE || !owned_by_me(st, ch->creator) ||
		    !st->regs[ch->creator].death_notify)
			continue;
		for (size_t k = 0; k < *ndead; k++) {
			struct ev_item *d = (struct ev_item *)st->evbuf + k;

			if (d->seq > ch->ev_acked &&
			    ev_add(st, n, d->seq, s, d->src, 1) < 0)
				return -ENOMEM;
		}
	}
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		struct mgr_link_sh *l = &st->links[i];

		if (l->state != LINK_EV_DISCONNECT &&
		    l->state != LINK_EV_DISMISSED)
			continue;
		if (!ch_is_live(st, l->ch, l->ch_gen)) {
			link_free(st, l);
			continue;
		}
		if (owned_by_me(st, st->chans[l->ch].creator) &&
		    ev_add(st, n, l->ev_seq, l->ch, i, 0) < 0)
			return -ENOMEM;
	}
	return 0;
}

int mgr_state_take_events(struct mgr_state *st, mgr_emit_fn emit, void *ctx)
{
	struct ev_item *v;
	size_t ndead, n;
	int sent = 0;

	if (st->self < 0 || !st->evblocked || mgr_state_lock(st) < 0)
		return 0;
	/* All or nothing: offering a later event before an earlier one of
	 * the same channel would make the library drop the earlier one. */
	if (ev_gather(st, &ndead, &n) < 0) {
		mgr_log(MGR_LOG_ERROR, "MESSIP-MGR-NOMEM",
			"no memory to sort pending events; retrying");
		mgr_state_unlock(st);
		return -ENOMEM;
	}
	v = st->evbuf;
	if (n > ndead)
		qsort(v + ndead, n - ndead, sizeof(*v), ev_cmp);
	for (size_t k = ndead; k < n; k++) {
		uint32_t slot = v[k].slot, srv = st->chans[slot].creator;
		int rc;

		if (st->evblocked[slot])
			continue;
		if (v[k].death) {
			struct mgr_reg_sh *d = &st->regs[v[k].src];

			rc = emit(ctx, (int)srv, (int)slot,
				  MGR_EV_DEATH_PROCESS, d->regno, d->id,
				  v[k].seq);
		} else {
			struct mgr_link_sh *l = &st->links[v[k].src];

			rc = emit(ctx, (int)srv, (int)slot,
				  l->state == LINK_EV_DISCONNECT
					  ? MGR_EV_DISCONNECT
					  : MGR_EV_DISMISSED,
				  l->regno, l->id, v[k].seq);
		}
		if (rc < 0)
			st->evblocked[slot] = 1; /* keep its order */
		else if (rc == 0)
			sent++;
	}
	for (size_t k = ndead; k < n; k++)
		st->evblocked[v[k].slot] = 0;
	gc_dead_locked(st);
	mgr_state_unlock(st);
	return sent;
}

int mgr_state_ack_events(struct mgr_state *st, int reg, int slot, uint32_t gen,
			 uint64_t seq)
{
	struct mgr_ch_sh *ch;
	int rc, n = 0;

	if (reg < 0 || !reg_ok(st, (uint32_t)reg))
		return -EINVAL;
	rc = mgr_state_lock(st);
	if (rc < 0)
		return rc;
	if (slot < 0 || !ch_is_live(st, (uint32_t)slot, gen)) {
		rc = -ESRCH;
		goto out;
	}
	ch = &st->chans[slot];
	if (ch->creator != (uint32_t)reg) {
		rc = -EACCES;
		goto out;
	}
	if (seq > st->sh->ev_seq)
		seq = st->sh->ev_seq;
	/* Events were offered in sequence order, so everything of this
	 * channel up to seq was sent and is now acknowledged. */
	for (uint32_t i = 0, end = links_end(st); i < end; i++) {
		struct mgr_link_sh *l = &st->links[i];

		if ((l->state == LINK_EV_DISCONNECT ||
		     l->state == LINK_EV_DISMISSED) &&
		    l->ch == (uint32_t)slot && l->ch_gen == gen &&
		    l->ev_seq <= seq) {
			link_free(st, l);
			n++;
		}
	}
	if (seq > ch->ev_acked)
		ch->ev_acked = seq;
	gc_dead_locked(st);
	rc = n;
out:
	mgr_state_unlock(st);
	return rc;
}

/* ---- repair ------------------------------------------------------------------- */

void mgr_state_repair(struct mgr_state *st)
{
	struct mgr_sh *sh = st->sh;
	uint32_t nregs = 0, nchannels = 0, nlinks = 0, ndead = 0;
	char name[MP_CHTAB_NAME_MAX + 1];

	repair_pending_bsend(st);
	/* Registrations: unknown states become free. */
	for (uint32_t r = 0; r < st->lay.max_regs; r++) {
		struct mgr_reg_sh *g = &st->regs[r];

		if (g->state > REG_DEAD)
			g->state = REG_FREE;
		if (g->state != REG_FREE)
			nregs++;
		if (g->state == REG_DEAD)
			ndead++;
	}
	/* Channels against the name table: a record is live only if fully
	 * created (state written last) and its name is in the table. */
	for (uint32_t s = 0; s < st->lay.max_channels; s++) {
		struct mgr_ch_sh *ch = &st->chans[s];
		int64_t g = mp_chtab_slot_name(&st->chtab, (int)s, name);
		int creator_ok = reg_ok(st, ch->creator) &&
				 (st->regs[ch->creator].state == REG_LIVE ||
				  st->regs[ch->creator].state == REG_ORPHAN);

		if (ch->state == CH_LIVE &&
		    (g < 0 || strncmp(name, ch->name, sizeof(name)) != 0 ||
		     !creator_ok)) {
			ch->gen++;
			ch->state = CH_FREE;
		} else if (ch->state != CH_LIVE && ch->state != CH_FREE) {
			ch->state = CH_FREE;
		}
		if (ch->state != CH_LIVE && g >= 0)
			mp_chtab_remove(&st->chtab, name);
		if (ch->state == CH_FREE && (ch->gen & 1))
			ch->gen++;
		ch->nclients = 0;
		if (ch->state == CH_LIVE)
			nchannels++;
	}
	/* Links: drop those whose channel or client is gone; recount. */
	for (uint32_t i = 0; i < st->lay.max_links; i++) {
		struct mgr_link_sh *l = &st->links[i];

		if (l->state == LINK_FREE)
			continue;
		if (l->state > LINK_EV_DISMISSED ||
		    !ch_is_live(st, l->ch, l->ch_gen)) {
			l->state = LINK_FREE;
			continue;
		}
		if (l->state == LINK_CONNECTED &&
		    (!reg_ok(st, l->reg) ||
		     (st->regs[l->reg].state != REG_LIVE &&
		      st->regs[l->reg].state != REG_ORPHAN))) {
			l->state = LINK_FREE;
			continue;
		}
		if (l->state == LINK_CONNECTED)
			st->chans[l->ch].nclients++;
		nlinks++;
	}
	/* No event number may be given twice. */
	for (uint32_t i = 0; i < st->lay.max_links; i++)
		if (st->links[i].state != LINK_FREE &&
		    st->links[i].ev_seq > sh->ev_seq)
			sh->ev_seq = st->links[i].ev_seq;
	for (uint32_t r = 0; r < st->lay.max_regs; r++)
		if (st->regs[r].state == REG_DEAD &&
		    st->regs[r].death_seq > sh->ev_seq)
			sh->ev_seq = st->regs[r].death_seq;
	sh->nregs = nregs;
	sh->nchannels = nchannels;
	sh->nlinks = nlinks;
	sh->ndead = ndead;
	sh->links_hw = 0;
	for (uint32_t i = st->lay.max_links; i > 0; i--) {
		if (st->links[i - 1].state != LINK_FREE) {
			sh->links_hw = i;
			break;
		}
	}
	if (sh->next_regno == 0 || sh->next_regno > INT32_MAX)
		sh->next_regno = 1;
	/* Every worker may hold stale event state: let them all look. */
	for (uint32_t w = 0; w < st->lay.nworkers; w++)
		queue_wake(st, w, MGR_WAKE_EVENT | MGR_WAKE_DATA);
}
