/*
 * mgr_state — the manager's shared-memory segment: everything the workers
 * share, and every operation on it.
 *
 * The segment ("/messip-mgr-<port>") is created by the master before it
 * forks, so every worker inherits the mapping and computes the layout from
 * its own (inherited, trusted) copy of the configuration; no offset or
 * size is ever read back from the segment.  Layout after the mp_shm header:
 *
 *   struct mgr_sh            global lock, counters, settings, hints
 *   struct mgr_worker_sh[W]  per worker: pid, epoch, wake hints, counters
 *   struct mgr_reg_sh[R]     registrations (one per HELLO'd connection,
 *                            kept while orphaned or while death events
 *                            about it are still owed)
 *   struct mgr_ch_sh[C]      channel records, indexed by channel-table slot
 *   struct mgr_link_sh[L]    (client registration, channel) entries, which
 *                            also carry a pending DISCONNECT/DISMISSED event
 *   mp_chtab                 channel name -> slot
 *   ring arena               one mp_ring per channel slot (ring i belongs
 *                            to channel slot i)
 *
 * Concurrency.  One robust lock (mgr_sh.lock) guards registrations,
 * channel records, links, the channel table's writers and every ring push.
 * Each ring has a single consumer: the worker owning the connection of the
 * channel's creator; it peeks and releases without the global lock.  A
 * ring is re-formatted only when its channel is created, which happens
 * under the lock, and a channel is removed only by the worker owning its
 * creator or, for an orphaned creator, by housekeeping — never while a
 * consumer is active.
 *
 * Ownership and orphans.  A live registration names the worker serving its
 * connection and that worker's epoch.  The master bumps a worker's epoch
 * when it dies (no lock: one atomic store), which makes all its
 * registrations orphaned at once; housekeeping then gives them
 * resume_grace_ms to be resumed (HELLO with their token) before ending them
 * uncleanly.
 *
 * Events are never queued: a pending DISCONNECT or DISMISSED is a state of
 * the link entry it is about, and a pending DEATH_PROCESS is a dead
 * registration kept (state DEAD) until every death-notify channel has
 * acknowledged its sequence number.  So the number of undelivered events
 * is bounded by the tables and none is ever dropped for lack of room.
 *
 * Events are acknowledged like buffered records.  Every event gets a
 * sequence number from one counter (mgr_sh.ev_seq) when it comes to be: a
 * link entry turning DISCONNECT/DISMISSED, a registration dying.  A
 * channel is offered its pending events in increasing sequence order; the
 * server library acknowledges them cumulatively (BACK with
 * MP_WIRE_F_EVENT), and only then does the event leave the segment (the
 * link entry is freed, the channel's ev_acked passes the death).  Writing
 * the EVENT is not enough: a worker killed after queueing it, or even
 * after the kernel took it (a socket closed with unread input is reset,
 * and its unsent bytes with it), would lose it.  After a resume the new
 * owner offers every unacknowledged event again with its original number,
 * and the library drops those it already has: exactly once.
 *
 * Buffered sends are deduplicated by request id.  Each registration
 * records the request id of the last BSEND it queued and what it was
 * answered (records queued before it); a library re-sends an unanswered
 * BSEND after a resume with its original request id, and request ids of a
 * registration only grow, so a BSEND whose id is not above the recorded one
 * was queued already and is answered from the record instead of being
 * queued twice.
 *
 * Repair.  Every multi-step update writes the record's `state` last when
 * creating and first when removing, so a worker killed inside the lock
 * leaves records that mgr_state_repair() can classify; it runs when the
 * lock reports MP_LOCK_REPAIR and rebuilds every derived field.
 *
 * Wake-ups.  Work for another worker is signalled through hint bits in its
 * mgr_worker_sh and its eventfd (written only when the hints were empty).
 * Wake-ups decided inside the lock are sent after it is released.
 */
#ifndef MGR_STATE_H
#define MGR_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "mgr_config.h"
#include "mp_chtab.h"
#include "mp_lock.h"
#include "mp_ring.h"
#include "mp_shm.h"

#define MGR_SHM_MAGIC   0x3152474d5049534dULL /* "MSIPMGR1" */
#define MGR_SHM_VERSION 4 /* 4: channel tickets */
#define MGR_ID_LEN      16    /* ids are <= 8 chars; room for the NUL */
#define MGR_NONE        UINT32_MAX
/* A channel's ticket: the key of its direct links (doc/protocol.md,
 * "Direct link authentication"); never shown by the status page. */
#define MGR_TICKET_LEN  32

/* Wake hints (mgr_worker_sh.hints). */
#define MGR_WAKE_DATA   0x01  /* records pushed to a ring you consume */
#define MGR_WAKE_EVENT  0x02  /* a link entry holds an event for you */
#define MGR_WAKE_ROOM   0x04  /* a ring you parked a sender on has room */
#define MGR_WAKE_LOCATE 0x08  /* a channel was created (LOCATE waiters) */
#define MGR_WAKE_DEATH  0x10  /* a registration died (DEATH_PROCESS) */
#define MGR_WAKE_RELOAD 0x20  /* settings changed */
#define MGR_WAKE_ORPHAN 0x40  /* a worker died: its registrations can be
				 resumed */

enum mgr_reg_state { REG_FREE = 0, REG_LIVE, REG_ORPHAN, REG_DEAD };
enum mgr_ch_state { CH_FREE = 0, CH_LIVE };
enum mgr_link_state {
	LINK_FREE = 0,
	LINK_CONNECTED,
	LINK_EV_DISCONNECT, /* owes the server an EVENT MESSIP_MSG_DISCONNECT */
	LINK_EV_DISMISSED,  /* owes the server an EVENT MESSIP_MSG_DISMISSED */
};

/* Event codes on the wire (messip.h values). */
#define MGR_EV_DISCONNECT    (-2)
#define MGR_EV_DISMISSED     (-3)
#define MGR_EV_DEATH_PROCESS (-7)

struct mgr_worker_sh {
	uint32_t pid;        /* master: current process (0: none) */
	uint32_t epoch;      /* master: bumped when the worker dies */
	int64_t  died_ns;    /* master: monotonic time of the last death */
	int64_t  started_ns; /* master */
	uint32_t hints;      /* MGR_WAKE_* bits (atomic) */
	uint32_t running;    /* worker: 1 once its loop runs */
	/* counters: written by the worker (relaxed), read by status tools */
	uint64_t connections;   /* open now (master zeroes it on death) */
	uint64_t registrations; /* HELLOs accepted (new or resumed) */
	uint64_t channels;      /* channels created */
	uint64_t accepted;      /* buffered records pushed */
	uint64_t delivered;     /* buffered records acknowledged */
	uint64_t requests;
	uint64_t errors;        /* protocol errors, dropped connections */
	uint64_t restarts;      /* master: times this worker was respawned */
	uint8_t  pad[32];
};
_Static_assert(sizeof(struct mgr_worker_sh) == 128, "worker record size");

struct mgr_reg_sh {
	uint32_t state;      /* enum mgr_reg_state */
	uint32_t regno;      /* registration number (never 0) */
	uint64_t token;      /* resume token */
	uint32_t worker;     /* owner (LIVE) */
	uint32_t epoch;      /* owner's epoch when it took the registration */
	int32_t  pid;
	uint32_t death_notify;
	int64_t  deadline_ns; /* ORPHAN: end at this time */
	uint64_t death_seq;   /* DEAD: its event sequence number (ev_seq) */
	int64_t  since;       /* realtime seconds, for status */
	uint32_t bsend_reqid; /* request id of the last BSEND queued, 0 none */
	int32_t  bsend_queued; /* and the records queued before it */
	uint32_t same_host; /* its HELLO gave our host token: pid checkable */
	uint32_t pad;
	char     id[MGR_ID_LEN];
	char     peer[56];
};
_Static_assert(sizeof(struct mgr_reg_sh) == 144, "registration size");

struct mgr_ch_sh {
	uint32_t state;      /* enum mgr_ch_state */
	uint32_t gen;        /* bumped on create and remove */
	uint32_t creator;    /* registration index */
	uint32_t creator_regno;
	uint32_t capacity;   /* records */
	uint32_t nclients;   /* connected links (derived) */
	uint64_t host_token;
	uint64_t ev_acked;   /* events acknowledged up to this sequence */
	uint64_t parked;     /* workers with senders parked on the ring (atomic) */
	int64_t  since;
	char     name[MP_CHTAB_NAME_MAX + 1];
	char     addr[64];
	uint8_t  ticket[MGR_TICKET_LEN];
};
_Static_assert(sizeof(struct mgr_ch_sh) == 200, "channel record size");

struct mgr_link_sh {
	uint32_t state;      /* enum mgr_link_state */
	uint32_t ch;         /* channel slot */
	uint32_t ch_gen;
	uint32_t reg;        /* client registration index (CONNECTED) */
	uint32_t regno;      /* client registration number */
	uint32_t pad;
	uint64_t ev_seq;     /* LINK_EV_*: the event's sequence number */
	char     id[MGR_ID_LEN];
};
_Static_assert(sizeof(struct mgr_link_sh) == 48, "link size");

struct mgr_sh {
	mp_lock_sh_t lock;
	/* geometry, informational (for status tools; never trusted here) */
	uint32_t nworkers, max_regs, max_channels, max_links;
	uint32_t ring_data_bytes, master_pid;
	/* under the lock */
	uint32_t next_regno;
	uint32_t nregs, nchannels, nlinks;
	uint32_t links_hw;            /* links[] from here on are all free */
	uint64_t ev_seq;              /* last event sequence number given */
	/* atomics */
	uint32_t settings_seq;        /* seqlock: odd while written */
	uint32_t settings_gen;        /* bumped by each reload */
	int64_t  settings[MGR_CFG_RELOADABLE];
	int64_t  housekeep_ns;        /* next housekeeping due */
	uint64_t locate_waiters;      /* workers with LOCATE waiters */
	/* under the lock; a hint that lets scans be skipped (repair
	 * recounts it) */
	uint32_t ndead;               /* registrations in REG_DEAD */
	/* under the lock: the BSEND being pushed (pend_reqid 0: none), so
	 * that repair can tell whether a worker killed between the push
	 * and recording its reqid had published the record (the ring's
	 * head moved from pend_head): see mgr_state_bsend */
	uint32_t pend_reqid, pend_reg, pend_slot, pend_gen;
	uint64_t pend_head;
	uint8_t  pad[36];
};

/* Trusted geometry, computed from the configuration. */
struct mgr_layout {
	uint32_t nworkers, max_regs, max_channels, max_links;
	uint32_t ring_data_bytes, max_payload;
	size_t   ring_size;   /* bytes per ring, aligned */
	size_t   off_workers, off_regs, off_chans, off_links, off_chtab,
		 chtab_size, off_rings, total;
};

/* Process-local handle. */
struct mgr_state {
	mp_shm_t shm;
	struct mgr_layout lay;
	struct mgr_sh *sh;
	struct mgr_worker_sh *workers;
	struct mgr_reg_sh *regs;
	struct mgr_ch_sh *chans;
	struct mgr_link_sh *links;
	uint8_t *rings;
	mp_chtab_t chtab;
	const int *efds;       /* eventfd per worker (master-made) */
	int self;              /* worker index, -1 in the master */
	uint32_t self_epoch;
	uint32_t self_hints;   /* hints for this worker found while locked */
	uint32_t wake[64];     /* hints to send after unlock */
	mp_ring_t *ringh;      /* cached ring handles, per slot */
	uint32_t *ringh_gen;   /* channel gen each handle was attached for */
	void    *evbuf;        /* take_events scratch (process-local) */
	size_t   evcap;
	uint8_t *evblocked;    /* per slot, during take_events */
	int64_t resume_grace_ms;
	uint32_t default_buffered;
	uint32_t repairs;      /* times this process repaired the segment */
};

/* A registration as seen by the worker that owns it. */
struct mgr_reginfo {
	int      reg;          /* index */
	uint32_t regno;
	uint64_t token;
};

/* What CH_CONNECT answers. */
struct mgr_chinfo {
	int      slot;
	uint32_t gen;
	uint32_t server_regno;
	uint64_t host_token;
	char     name[MP_CHTAB_NAME_MAX + 1];
	char     server_id[MGR_ID_LEN];
	char     addr[64];
	uint8_t  ticket[MGR_TICKET_LEN];
};

/* ---- set-up ----------------------------------------------------------- */

/*
 * Compute the layout for configuration c.  Returns the segment size, or 0
 * when c asks for more than can be addressed.  The number of channels is
 * min(max_channels, ring_memory / ring size): each channel has its ring.
 */
size_t mgr_state_layout(const struct mgr_config *c, struct mgr_layout *lay);

/*
 * Master: create, format and publish the segment `name`.  A segment of
 * that name left by a dead manager (its creator pid no longer exists, or
 * it cannot be opened as ours) is replaced.  Returns 0, -EEXIST (a live
 * manager owns the name; *other_pid is set), -ENOSPC/-ENOMEM, -EPERM
 * (shm_group), or another -errno from mp_shm_create.
 */
int mgr_state_create(struct mgr_state *st, const struct mgr_config *c,
		     const char *name, const int *efds, pid_t *other_pid);

/* Unmap; the master's handle also unlinks the name.  Frees local memory. */
void mgr_state_close(struct mgr_state *st);

/*
 * Worker, right after fork: take identity `self` (its epoch is read from
 * the segment) and allocate the local ring-handle cache.  0 or -ENOMEM.
 */
int mgr_state_attach_worker(struct mgr_state *st, int self,
			    const struct mgr_config *c);

/*
 * Worker whose master died: unlink the segment's name if it still names
 * this segment (same creator pid), so that a manager killed with SIGKILL
 * leaves nothing in /dev/shm once its workers are gone.  Idempotent.
 */
void mgr_state_unlink_orphaned(struct mgr_state *st);

/* ---- master (atomics only, never the lock) ---------------------------- */

void mgr_state_worker_started(struct mgr_state *st, int w, pid_t pid);
/* A worker died: bump its epoch (orphaning its registrations), zero its
 * connection gauge, count a restart. */
void mgr_state_worker_died(struct mgr_state *st, int w);
/* Publish reloadable settings and wake every worker with RELOAD. */
void mgr_state_publish_settings(struct mgr_state *st,
				const struct mgr_config *c);

/* ---- wake-ups ----------------------------------------------------------- */

/* Give worker w the hint bits (eventfd write only if it had none). */
void mgr_state_wake(struct mgr_state *st, int w, uint32_t bits);

/* Worker: take and clear this worker's hints (shared and local). */
uint32_t mgr_state_take_hints(struct mgr_state *st);

/*
 * Worker: read the published settings (seqlock) if their generation is not
 * *gen; returns 1 and updates *gen and vals when newer, 0 when unchanged.
 */
int mgr_state_read_settings(struct mgr_state *st, uint32_t *gen,
			    int64_t vals[MGR_CFG_RELOADABLE]);

/* Total open connections over all workers (for max_connections). */
uint64_t mgr_state_connections(struct mgr_state *st);

/* ---- registrations ---------------------------------------------------- */

/*
 * New registration for process `id` (pid, peer for status) owned by the
 * calling worker.  Returns 0 with *out, or -ENOSPC (table full).
 */
int mgr_state_reg_new(struct mgr_state *st, const char *id, int32_t pid,
		      const char *peer, struct mgr_reginfo *out);

/*
 * Resume the orphaned registration with this token: the calling worker
 * becomes its owner.  Returns 0 with *out, -ESTALE (no such token),
 * -EBUSY (its registration is still served by a live worker: retry after
 * MGR_WAKE_ORPHAN or give up with ESTALE), -EINVAL (token 0).
 */
int mgr_state_reg_resume(struct mgr_state *st, uint64_t token,
			 const char *peer, struct mgr_reginfo *out);

/*
 * End registration reg (owned by the caller).  clean (BYE): connected
 * channels get DISCONNECT.  Unclean: they get DISMISSED, death-notify
 * channels get DEATH_PROCESS.  Either way the channels it created are
 * removed.  Idempotent on a free slot.
 */
void mgr_state_reg_end(struct mgr_state *st, int reg, int clean);

/*
 * Registration reg's process is on this host (its HELLO carried our host
 * token), so that its pid can be checked here (mgr_state_reg_lost).  Set
 * by the worker that owns it after every HELLO; a registration is
 * remote until told otherwise.
 */
void mgr_state_reg_same_host(struct mgr_state *st, int reg, int same_host);

/* How the connection of a registration ended without BYE. */
enum mgr_lost_how {
	MGR_LOST_END,	/* orderly end of stream, or dropped by the
			   manager (bad input, slow peer): end now */
	MGR_LOST_ERROR, /* failed with an error (reset, timeout) */
};

/*
 * The connection of live registration reg ended without BYE.  An orderly
 * end of stream (the peer's kernel closed the socket: its process exited
 * or closed it) or a drop by the manager ends the registration uncleanly
 * at once, as mgr_state_reg_end(st, reg, 0).  A link that failed with an
 * error (MGR_LOST_ERROR) may have been reset under a living process,
 * whose library reconnects: the registration is orphaned for
 * resume_grace_ms like a dead worker's - except when its process is on
 * this host (mgr_state_reg_same_host) and its pid (from HELLO, checked
 * in our PID namespace) is gone or a zombie: a process killed with
 * unread input makes its kernel send a reset.  Housekeeping ends a held
 * same-host registration early when its process ends meanwhile.  The pid
 * of a remote process means nothing here and is never checked.
 */
void mgr_state_reg_lost(struct mgr_state *st, int reg, enum mgr_lost_how how);

/* Turn death notification on or off for reg.  0 or -EINVAL. */
int mgr_state_death_notify(struct mgr_state *st, int reg, int on);

/*
 * List what reg owns, for a worker that resumed it: cb(ctx, slot, gen,
 * created) once per channel it created (created=1) and per channel it is
 * connected to (created=0).  Returns the number of calls.
 */
int mgr_state_reg_list(struct mgr_state *st, int reg,
		       void (*cb)(void *ctx, int slot, uint32_t gen,
				  int created),
		       void *ctx);

/*
 * Housekeeping, at most once per period across all workers (the caller
 * may call it often): orphan the registrations of dead workers, end those
 * whose grace ran out, free dead registrations no death-notify channel
 * still needs.  Returns 1 if it ran.
 */
int mgr_state_housekeep(struct mgr_state *st, int64_t now_ns);

/* ---- channels ---------------------------------------------------------- */

/*
 * Create channel name for registration reg.  capacity 0 means the default.
 * ticket (MGR_TICKET_LEN bytes, NULL: zeros) is kept with the channel and
 * handed out by mgr_state_ch_connect only.
 * Returns the slot (>= 0) with *gen, or -EEXIST, -ENOSPC (table full),
 * -ENAMETOOLONG, -EINVAL (empty name, negative capacity), -EBADMSG.
 */
int mgr_state_ch_create(struct mgr_state *st, int reg, const char *name,
			int32_t capacity, const char *addr,
			uint64_t host_token, const uint8_t *ticket,
			uint32_t *gen);

/*
 * Delete channel name, created by reg, if no client is connected.
 * Returns 0 (*nclients = 0: deleted; > 0: still connected, not deleted),
 * -ENOENT (no such name), -EPERM (reg is not its creator).
 * *slot receives the slot (for the caller's bookkeeping).
 */
int mgr_state_ch_delete(struct mgr_state *st, int reg, const char *name,
			uint32_t *nclients, int *slot);

/*
 * Connect reg to channel name (once: a second connect finds the first).
 * Returns the slot with *info, or -ENOENT, -ENOSPC (link table full),
 * -ENAMETOOLONG, -EINVAL.
 */
int mgr_state_ch_connect(struct mgr_state *st, int reg, const char *name,
			 struct mgr_chinfo *info);

/*
 * Disconnect reg from channel (slot, gen): its server gets DISCONNECT.
 * Returns 0, -ESRCH (the channel is gone), -EACCES (reg not connected).
 */
int mgr_state_ch_disconnect(struct mgr_state *st, int reg, int slot,
			    uint32_t gen);

/* 1 if (slot, gen) is a live channel, else 0. */
int mgr_state_ch_live(struct mgr_state *st, int slot, uint32_t gen);

/* ---- buffered messages -------------------------------------------------- */

/*
 * Push a record from registration reg into channel (slot, gen)'s ring
 * without waiting, for the BSEND with request id reqid.  Returns an upper
 * bound of the number queued before it (>= 0, mp_ring_push) and wakes
 * the consumer (whatever that number), or -ETIMEDOUT
 * (ring full: park and retry), -ESRCH (channel gone), -EMSGSIZE, -EBADMSG
 * (corrupt ring), -ENOTRECOVERABLE.  A reqid that is not above the last
 * one reg queued (serial order, so ids may wrap) is a re-sent request:
 * nothing is pushed and the first answer's count is returned again.
 * reqid 0 is never deduplicated.
 */
int mgr_state_bsend(struct mgr_state *st, int reg, int slot, uint32_t gen,
		    uint32_t reqid, int32_t type, const void *data,
		    uint32_t len);

/* Records of len bytes that channel (slot, gen)'s ring has room for now
 * (an estimate, without the lock; 0 if the channel is gone). */
int mgr_state_room(struct mgr_state *st, int slot, uint32_t gen,
		   uint32_t len);

/* Before retrying a failed push: ask to be woken (MGR_WAKE_ROOM) when
 * the ring of slot gets room. */
void mgr_state_park(struct mgr_state *st, int slot);

/* Before retrying a failed lookup: ask to be woken (MGR_WAKE_LOCATE) when
 * any channel is created. */
void mgr_state_locate_wait(struct mgr_state *st);

/*
 * Consumer: the ring of (slot, gen), attached (and cached) for the
 * calling worker.  NULL if the channel is gone or the ring header does
 * not validate.
 */
mp_ring_t *mgr_state_ring(struct mgr_state *st, int slot, uint32_t gen);

/* Consumer: records before cursor were acknowledged: free them and wake
 * parked senders.  nrec is counted as delivered.  0 or -errno of
 * mp_ring_release. */
int mgr_state_release(struct mgr_state *st, int slot, uint32_t gen,
		      uint64_t cursor, uint32_t nrec);

/* ---- events ------------------------------------------------------------- */

/*
 * Emit callback: deliver event ev (MGR_EV_*) number seq about
 * registration (regno, id) to the channel (slot) created by server
 * registration `server`.  Return 0 when it was queued, 1 when that
 * connection was sent it already (it waits for the acknowledgement), < 0
 * when it cannot be queued now (the connection's output is full): the
 * channel's later events are then not offered in this call, so that each
 * channel gets its events in sequence order.  Called with the lock held:
 * queue bytes in memory only.
 */
typedef int (*mgr_emit_fn)(void *ctx, int server, int slot, int32_t ev,
			   uint32_t regno, const char *id, uint64_t seq);

/* Offer the unacknowledged DISCONNECT/DISMISSED and DEATH_PROCESS events
 * of channels whose creator this worker owns, per channel in increasing
 * sequence order.  Returns the number emitted (callback returned 0). */
int mgr_state_take_events(struct mgr_state *st, mgr_emit_fn emit, void *ctx);

/*
 * The creator reg of channel (slot, gen) acknowledged its events up to
 * sequence seq: they leave the segment.  Returns the number of link
 * events freed (>= 0), -ESRCH (channel gone), -EACCES (reg is not its
 * creator).  seq is untrusted: one beyond the last number given is taken
 * as the last.
 */
int mgr_state_ack_events(struct mgr_state *st, int reg, int slot, uint32_t gen,
			 uint64_t seq);

/* ---- repair ------------------------------------------------------------- */

/* Rebuild derived data and drop half-done records (lock held).  Exposed
 * for tests; the lock wrapper calls it on MP_LOCK_REPAIR. */
void mgr_state_repair(struct mgr_state *st);

/* Take / release the global lock (repairing when the last holder died).
 * Release sends the wake-ups decided meanwhile.  For tests and rare
 * multi-step callers. */
int mgr_state_lock(struct mgr_state *st);
void mgr_state_unlock(struct mgr_state *st);

#endif
